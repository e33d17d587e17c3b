"""The web interface (``/``): server-rendered pages over the same façade as the API."""
