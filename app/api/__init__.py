"""HTTP surface: the app factory, controllers, auth, and the one place errors map to HTTP."""
