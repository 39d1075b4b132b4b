"""The routes: the route table, the one handler base, and the endpoint handlers."""
