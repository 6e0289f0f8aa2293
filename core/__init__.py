"""Capsule's core: a transactional document database that runs your functions.

Define a ``Schema``, register queries, mutations and actions on an ``App``, and call them
through ``app.client()`` / ``app.sync_client()`` (or ``core.testing.TestApp`` in tests).
"""

from __future__ import annotations

from core.app import App
from core.auth import UserIdentity
from core.client import Client, SyncClient
from core.components import Component, ComponentHandle, call, function_handle, run_function
from core.context import ActionCtx, MutationCtx, QueryCtx
from core.crons import Crons
from core.database import DatabaseReader, DatabaseWriter, Page, Query
from core.errors import (
    AppError,
    BindingExistsError,
    BindingNotFoundError,
    CapsuleError,
    ConflictError,
    ForbiddenError,
    FunctionNotFoundError,
    InvalidArgumentError,
    InvalidHandleError,
    InvalidIdError,
    InvalidValueError,
    LimitExceededError,
    RequestTooLargeError,
    SchemaMismatchError,
    UnauthenticatedError,
    UserError,
)
from core.files import FileMetadata
from core.functions import FunctionRef
from core.handles import handle_path, is_handle
from core.http_client import HttpClient
from core.ids import Id
from core.indexes.text import SearchQuery
from core.indexes.vector import VectorFilter
from core.scheduler import SchedulerConfig
from core.schema import Schema, Table
from core.services import Service
from core.storage import SQLiteStorage, Storage
from core.values import UNSET, Value

__all__ = [
    "ActionCtx",
    "App",
    "AppError",
    "BindingExistsError",
    "BindingNotFoundError",
    "CapsuleError",
    "Client",
    "Component",
    "ComponentHandle",
    "ConflictError",
    "Crons",
    "DatabaseReader",
    "DatabaseWriter",
    "FileMetadata",
    "ForbiddenError",
    "FunctionNotFoundError",
    "FunctionRef",
    "HttpClient",
    "Id",
    "InvalidArgumentError",
    "InvalidHandleError",
    "InvalidIdError",
    "InvalidValueError",
    "LimitExceededError",
    "MutationCtx",
    "Page",
    "Query",
    "QueryCtx",
    "RequestTooLargeError",
    "SQLiteStorage",
    "SchedulerConfig",
    "Schema",
    "SchemaMismatchError",
    "SearchQuery",
    "Service",
    "Storage",
    "SyncClient",
    "Table",
    "UNSET",
    "UnauthenticatedError",
    "UserError",
    "UserIdentity",
    "Value",
    "VectorFilter",
    "call",
    "function_handle",
    "handle_path",
    "is_handle",
    "run_function",
]
