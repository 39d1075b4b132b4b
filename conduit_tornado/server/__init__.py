"""The HTTP/1.1 front: connections, parsing, the application's dispatch, uploads."""
