"""Controllers: parse, call one service, shape the response. No business rules here."""
