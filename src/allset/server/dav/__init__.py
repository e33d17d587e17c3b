"""WebDAV at /dav/ (R-STORE-2): WsgiDAV over the files façade."""
