"""The API's routers: operations checks and the jobs resource."""
