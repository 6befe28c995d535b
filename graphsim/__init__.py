"""graphsim: a local Microsoft Graph and identity platform for tests, benchmarks and demos."""
