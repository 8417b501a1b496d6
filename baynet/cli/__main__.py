"""``python -m baynet.cli``: the same command as ``baynet``."""

from baynet.cli.main import app

app()
