"""The client API beyond chat: the Responses API (and its WebSocket mode), Conversations,
Anthropic's Messages API, moderations and rerank."""

from __future__ import annotations

from .common import (
    ANY_OBJECT,
    BOOL,
    METADATA,
    MODEL,
    OBJ_ARRAY,
    SSE,
    STRING,
    Json,
    Op,
    nullable,
    q,
    ref,
)

_LIST: Json = {
    "type": "object",
    "required": ["object", "data", "has_more"],
    "properties": {
        "object": {"const": "list"},
        "data": OBJ_ARRAY,
        "first_id": nullable(STRING),
        "last_id": nullable(STRING),
        "has_more": {"type": "boolean"},
    },
}

SCHEMAS: dict[str, Json] = {
    "ResponseRequest": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": MODEL,
            "input": {"anyOf": [STRING, OBJ_ARRAY]},
            "instructions": {"anyOf": [STRING, OBJ_ARRAY, {"type": "null"}]},
            "stream": {"type": "boolean"},
            "store": {"type": "boolean"},
            "background": {"type": "boolean"},
            "previous_response_id": STRING,
            "conversation": {"anyOf": [STRING, ANY_OBJECT]},
            "tools": OBJ_ARRAY,
            "text": ANY_OBJECT,
            "max_output_tokens": {"type": "integer"},
            "temperature": {"type": "number"},
            "top_p": {"type": "number"},
            "metadata": METADATA,
            "user": STRING,
        },
    },
    "Response": {
        "type": "object",
        "required": ["id", "object", "created_at", "status", "model", "output"],
        "properties": {
            "id": STRING,
            "object": {"const": "response"},
            "status": {
                "enum": [
                    "completed",
                    "failed",
                    "in_progress",
                    "cancelled",
                    "queued",
                    "incomplete",
                ]
            },
            "model": STRING,
            "output": OBJ_ARRAY,
            "usage": ANY_OBJECT,
        },
    },
    "ResponseDeleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {
            "id": STRING,
            "object": {"const": "response"},
            "deleted": {"const": True},
        },
    },
    "InputTokens": {
        "type": "object",
        "required": ["object", "input_tokens"],
        "properties": {
            "object": {"const": "response.input_tokens"},
            "input_tokens": {"type": "integer", "minimum": 0},
        },
    },
    "ItemList": _LIST,
    "Conversation": {
        "type": "object",
        "required": ["id", "object", "created_at", "metadata"],
        "properties": {
            "id": STRING,
            "object": {"const": "conversation"},
            "created_at": {"type": "integer"},
            "metadata": METADATA,
        },
    },
    "ConversationRequest": {
        "type": "object",
        "properties": {"items": {**OBJ_ARRAY, "maxItems": 20}, "metadata": METADATA},
    },
    "ConversationUpdate": {
        "type": "object",
        "required": ["metadata"],
        "properties": {"metadata": METADATA},
    },
    "ConversationItemsRequest": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {**OBJ_ARRAY, "minItems": 1, "maxItems": 20}},
    },
    "ConversationDeleted": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {
            "id": STRING,
            "object": {"const": "conversation.deleted"},
            "deleted": {"const": True},
        },
    },
    "MessagesRequest": {
        "type": "object",
        "required": ["model", "max_tokens", "messages"],
        "properties": {
            "model": MODEL,
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": {**OBJ_ARRAY, "minItems": 1},
            "system": {"anyOf": [STRING, OBJ_ARRAY]},
            "stream": {"type": "boolean"},
            "tools": OBJ_ARRAY,
            "tool_choice": ANY_OBJECT,
            "stop_sequences": {"type": "array", "items": STRING},
            "temperature": {"type": "number"},
            "metadata": ANY_OBJECT,
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
        "properties": {
            "id": STRING,
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "model": STRING,
            "content": OBJ_ARRAY,
            "stop_reason": nullable(STRING),
            "usage": ANY_OBJECT,
        },
    },
    "MessageTokens": {
        "type": "object",
        "required": ["input_tokens"],
        "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
    },
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": STRING, "message": STRING},
            },
        },
    },
    "ModerationRequest": {
        "type": "object",
        "required": ["input"],
        "properties": {"model": MODEL, "input": {"anyOf": [STRING, OBJ_ARRAY]}},
    },
    "Moderation": {
        "type": "object",
        "required": ["id", "model", "results"],
        "properties": {"id": STRING, "model": STRING, "results": OBJ_ARRAY},
    },
    "RerankRequest": {
        "type": "object",
        "required": ["model", "query", "documents"],
        "properties": {
            "model": MODEL,
            "query": STRING,
            "documents": {"type": "array", "items": {"anyOf": [STRING, ANY_OBJECT]}},
            "top_n": {"type": "integer", "minimum": 1},
        },
    },
    "Rerank": {
        "type": "object",
        "required": ["results"],
        "properties": {"model": STRING, "results": OBJ_ARRAY},
    },
}

_ITEM_PAGE = (
    q("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
    q("order", {"enum": ["asc", "desc"]}),
    q("after", STRING),
)

PARAMS: dict[str, tuple[str, ...]] = {
    "responses.ResponseHandler": ("response_id",),
    "responses.ResponseCancelHandler": ("response_id",),
    "responses.InputItemsHandler": ("response_id",),
    "conversations.ConversationHandler": ("conversation_id",),
    "conversations.ConversationItemsHandler": ("conversation_id",),
    "conversations.ConversationItemHandler": ("conversation_id", "item_id"),
}

OPS: dict[str, dict[str, Op]] = {
    "responses.ResponsesHandler": {
        "post": Op(
            "Create a response: the Responses API, on every provider "
            "(streamed as server-sent events with stream: true).",
            ref("Response"),
            body="ResponseRequest",
            other_types={"text/event-stream": SSE},
        ),
        "get": Op(
            "The Responses WebSocket mode (client.responses.connect(), upgrade only): send "
            "response.create events, receive the events of the SSE stream as JSON messages. A "
            "GET without the upgrade answers 426.",
            None,
            status=101,
            also=(426,),
        ),
    },
    "responses.InputTokensHandler": {
        "post": Op(
            "Count a request's input tokens (the gateway's estimate).",
            ref("InputTokens"),
            body="ResponseRequest",
        )
    },
    "responses.ResponseHandler": {
        "get": Op(
            "A stored response of this key; with stream=true, the events of a response "
            "created with background and stream, after starting_after, live until it ends.",
            ref("Response"),
            query=(
                q("stream", BOOL),
                q("starting_after", {"type": "integer", "minimum": -1, "maximum": 2**31 - 1}),
            ),
            other_types={"text/event-stream": SSE},
        ),
        "delete": Op("Delete a stored response.", ref("ResponseDeleted")),
    },
    "responses.ResponseCancelHandler": {
        "post": Op("Cancel a background response.", ref("Response"))
    },
    "responses.InputItemsHandler": {
        "get": Op("The input items of a stored response.", ref("ItemList"), query=_ITEM_PAGE)
    },
    "conversations.ConversationsHandler": {
        "post": Op("Create a conversation.", ref("Conversation"), body="ConversationRequest")
    },
    "conversations.ConversationHandler": {
        "get": Op("A conversation of this key.", ref("Conversation")),
        "post": Op(
            "Update a conversation's metadata.",
            ref("Conversation"),
            body="ConversationUpdate",
        ),
        "delete": Op("Delete a conversation and its items.", ref("ConversationDeleted")),
    },
    "conversations.ConversationItemsHandler": {
        "get": Op("A conversation's items.", ref("ItemList"), query=_ITEM_PAGE),
        "post": Op(
            "Add items to a conversation.", ref("ItemList"), body="ConversationItemsRequest"
        ),
    },
    "conversations.ConversationItemHandler": {
        "get": Op("One item of a conversation.", ANY_OBJECT),
        "delete": Op("Delete an item; answers the conversation.", ref("Conversation")),
    },
    "messages.MessagesHandler": {
        "post": Op(
            "Anthropic's Messages API, on every provider (x-api-key or Bearer; "
            "streamed with stream: true; errors in Anthropic's envelope).",
            ref("Message"),
            body="MessagesRequest",
            other_types={"text/event-stream": SSE},
            envelope="A",
        )
    },
    "messages.CountTokensHandler": {
        "post": Op(
            "Count a Messages request's input tokens (the gateway's estimate).",
            ref("MessageTokens"),
            body="MessagesRequest",
            envelope="A",
        )
    },
    "classify.ModerationsHandler": {
        "post": Op("Classify content (moderation).", ref("Moderation"), body="ModerationRequest")
    },
    "classify.RerankHandler": {
        "post": Op("Rerank documents for a query.", ref("Rerank"), body="RerankRequest")
    },
}
