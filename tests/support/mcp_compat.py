"""x402 2.25's `x402MCPSession` was written against mcp 1.x: it reads results' camelCase
attributes (`isError`, `structuredContent`) and passes `read_timeout_seconds` as a timedelta.
mcp 2.x's `ClientSession` answers snake_case and takes seconds as a number. This view of a
2.x session gives x402MCPSession the shape it reads; the calls, payments and answers are the
session's own."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from mcp import ClientSession


class McpSessionForX402:
    def __init__(self, session: ClientSession) -> None:
        self.session = session

    async def initialize(self) -> Any:
        return await self.session.initialize()

    async def list_tools(self) -> Any:
        return await self.session.list_tools()

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        read_timeout_seconds: timedelta | float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        if isinstance(read_timeout_seconds, timedelta):
            read_timeout_seconds = read_timeout_seconds.total_seconds()
        result = await self.session.call_tool(
            name, arguments, read_timeout_seconds=read_timeout_seconds, meta=meta
        )
        return SimpleNamespace(
            content=result.content,
            isError=result.is_error,
            structuredContent=result.structured_content,
            meta=result.meta,
        )
