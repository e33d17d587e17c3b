"""HTTP adapters: parse requests, call the façades, render responses. No policy here."""
