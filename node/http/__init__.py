"""The node's HTTP layer: the public API (`api`), the operators' admin API (`admin`), and
what both share: the one table from the exception tree to problem+json (`problems`), the
parameter parsers (`params`) and the middlewares (`middlewares`). The handlers of the
public API are grouped by what they serve: transactions and receipts (`tx`), chain and
node state (`state`), the event stream (`stream`).
"""
