"""The Software's library side (R-STORE-2): talks to a server over HTTPS only, never
imports the server's storage or database code (an import-linter contract)."""
