FROM python:3.11-slim
WORKDIR /app
# The locked versions first (their layer is cached while only the code changes), then the project.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY config ./config
COPY graphclient ./graphclient
COPY webhooks ./webhooks
COPY jobs ./jobs
COPY worker ./worker
COPY api ./api
COPY cli ./cli
COPY graphsim ./graphsim
RUN pip install --no-cache-dir --no-deps --no-build-isolation .
RUN useradd --create-home app
USER app
ENTRYPOINT ["bulklicense"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
