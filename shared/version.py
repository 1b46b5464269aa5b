"""Versions: haven's own, and the Patroni API level it speaks on the wire."""

__version__ = "0.1.0"

# Member keys, GET /patroni and metrics carry the version of the Patroni API we reproduce,
# so that tools written for Patroni 3.2 see a cluster they understand.
PATRONI_API_VERSION = "3.2.2"
