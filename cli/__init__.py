"""The `bulklicense` command line, its API client, the demo and the local stack."""
