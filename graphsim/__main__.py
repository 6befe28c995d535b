"""`python -m graphsim`: the same as `bulklicense simulate`."""

from graphsim.cli import main

if __name__ == "__main__":
    main()
