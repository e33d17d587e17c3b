"""Public links: the visitor's pages under ``/s/`` (``public``) and the Client's and
operator's API (``api``). Thin adapters over ``files.links.LinkService``."""
