"""The closed set of error codes a reply may carry."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    BAD_MESSAGE = "bad_message"  # not msgpack, not a map, missing envelope fields, too large
    UNKNOWN_OP = "unknown_op"
    INVALID_BODY = "invalid_body"  # the op exists but its body does not match the schema
    DEADLINE_EXCEEDED = "deadline_exceeded"
    BUSY = "busy"  # another long operation is running
    PRECONDITION_FAILED = "precondition_failed"
    NOT_LEADER = "not_leader"
    UNAVAILABLE = "unavailable"  # the external system (DCS, PostgreSQL) cannot be reached
    INTERNAL = "internal"  # a bug; the traceback stays in the server's log


class ProtocolError(Exception):
    """Raised while decoding or validating a message; becomes an error reply."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class OpError(Exception):
    """Raised by a request handler to answer with an error reply instead of a body."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RemoteError(Exception):
    """The server answered with an error reply (or never answered: UNAVAILABLE/DEADLINE_EXCEEDED)."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = ErrorCode(code) if code in ErrorCode._value2member_map_ else ErrorCode.INTERNAL
        self.message = message
