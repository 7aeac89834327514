"""The gateway's HTTP service (``tidings serve``): CloudEvents in, server-sent events out.

Needs the ``tidings[gateway]`` extra. :func:`tidings.server.app.create_app` builds the
Starlette application over a :class:`tidings.gateway.Gateway`; :mod:`tidings.server.serve`
runs it on uvicorn with signal handling. Nothing is imported here, so that the gateway's
targets can use the CloudEvents module without importing the application.
"""
