"""Who may do what: Clients (tenants), their users, operator staff, credentials, and
the throttling of guesses. A façade over ``db`` that the adapters call; imports ``core``
and ``db`` only."""
