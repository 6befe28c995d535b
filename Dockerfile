FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY jobs ./jobs
COPY worker ./worker
COPY graphsim ./graphsim
COPY bench ./bench
RUN pip install --no-cache-dir .
RUN useradd --create-home app
USER app
ENTRYPOINT ["bulklicense"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
