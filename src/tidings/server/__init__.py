"""The gateway's HTTP service (``tidings serve``): CloudEvents in, server-sent events out.

Needs the ``tidings[gateway]`` extra. :func:`tidings.server.app.create_app` builds the
Starlette application over a :class:`tidings.gateway.Gateway`; :mod:`tidings.server.serve`
runs it on uvicorn with signal handling. Nothing but the extra is imported here, so that the gateway's
targets can use the CloudEvents module without importing the application.
"""

try:  # the extra's modules, checked before any submodule needs them
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
    import yaml  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"tidings.server needs {exc.name}: install it with pip install 'tidings[gateway]'"
    ) from exc
