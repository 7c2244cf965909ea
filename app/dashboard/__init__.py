"""The owners' web dashboard at `/dashboard`: server-rendered pages over the same services the
API calls, signed in with a user's tokens held in HttpOnly cookies."""

from app.dashboard.routes import dashboard_router

__all__ = ["dashboard_router"]
