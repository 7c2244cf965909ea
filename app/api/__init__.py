"""HTTP surface: the Litestar app factory, controllers, auth, and the one place errors map to HTTP."""
