"""TypeScript from an AsyncAPI document: types for every message and a thin client.

:func:`typescript_client` writes one self-contained ``.ts`` module (checked with
``tsc --strict`` in the tests):

- an ``interface`` (or type alias) per named schema and per message payload, fields
  required or optional (``?``) as the JSON Schema says, enums as unions of literals;
- ``Topics``: each concrete channel address mapped to the payload type of its message, so
  ``client.publish("orders.placed", {...})`` is checked against that event's fields (a
  field removed from the Python class fails the build of code that sets it);
- ``TidingsClient``: ``publish(topic, data, options)`` as a binary-mode CloudEvent
  (``POST /events``, bearer token, ``ce-dataschema`` when the message names one) and
  ``subscribe(pattern, {after, signal})``, an async iterator of typed CloudEvents read from
  the gateway's server-sent events. It needs only ``fetch`` (browsers, Node 18+, Deno).
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ("typescript_client",)

_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


def _type_name(name: str) -> str:
    parts = re.split(r"[^A-Za-z0-9]+", name)
    joined = "".join(p[:1].upper() + p[1:] for p in parts if p)
    if not joined or joined[0].isdigit():
        joined = "T" + joined
    return joined


def _prop(name: str) -> str:
    return name if _IDENT.fullmatch(name) else json.dumps(name)


class _Writer:
    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def ts(self, schema: Any, indent: str = "") -> str:
        if schema is True or not isinstance(schema, dict) or not schema:
            return "unknown"
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return _type_name(ref.rsplit("/", 1)[1])
        variants = schema.get("anyOf") or schema.get("oneOf")
        if variants:
            return " | ".join(self.ts(v, indent) for v in variants)
        if "const" in schema:
            return json.dumps(schema["const"])
        if "enum" in schema:
            return " | ".join(json.dumps(v) for v in schema["enum"])
        kind = schema.get("type")
        if isinstance(kind, list):
            return " | ".join(self.ts({**schema, "type": k}, indent) for k in kind)
        if kind == "string":
            return "string"
        if kind in ("integer", "number"):
            return "number"
        if kind == "boolean":
            return "boolean"
        if kind == "null":
            return "null"
        if kind == "array":
            items = schema.get("items")
            return f"Array<{self.ts(items, indent)}>"
        if kind == "object" or "properties" in schema:
            return self.object(schema, indent)
        return "unknown"

    def object(self, schema: dict[str, Any], indent: str) -> str:
        properties: dict[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        if not properties:
            value = self.ts(extra, indent) if isinstance(extra, dict) else "unknown"
            return f"Record<string, {value}>"
        required = set(schema.get("required", ()))
        inner = indent + "  "
        lines = ["{"]
        for name, sub in properties.items():
            optional = "" if name in required else "?"
            lines.append(f"{inner}{_prop(name)}{optional}: {self.ts(sub, inner)};")
        lines.append(indent + "}")
        return "\n".join(lines)


_CLIENT = """
/** An error answer of the gateway (application/problem+json). */
export class TidingsError extends Error {
  constructor(
    readonly status: number,
    readonly problem: Record<string, unknown>,
  ) {
    super(String(problem["detail"] ?? `HTTP ${status}`));
  }
}

/** A received event: the CloudEvent's attributes and its typed data. */
export interface CloudEvent<T> {
  specversion: "1.0";
  id: string;
  source: string;
  type: string;
  time?: string;
  dataschema?: string;
  partitionkey?: string;
  data: T;
  [extension: string]: unknown;
}

export interface PublishOptions {
  id?: string;
  source?: string;
  key?: string;
  headers?: Record<string, string>;
}

/** A thin client of the tidings gateway's HTTP API, typed by the contract. */
export class TidingsClient {
  constructor(
    readonly baseUrl: string,
    readonly token?: string,
  ) {}

  private headers(): Record<string, string> {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  /** Publish one event on `topic` (binary-mode CloudEvent); resolves once it is durable. */
  async publish<K extends keyof Topics>(
    topic: K,
    data: Topics[K],
    options: PublishOptions = {},
  ): Promise<{ ids: string[]; positions: number[] }> {
    const headers: Record<string, string> = {
      ...this.headers(),
      ...(options.headers ?? {}),
      "content-type": "application/json",
      "ce-specversion": "1.0",
      "ce-id": options.id ?? crypto.randomUUID(),
      "ce-source": options.source ?? "tidings-ts-client",
      "ce-type": String(topic),
    };
    const schema = DATASCHEMAS[topic];
    if (schema !== undefined) headers["ce-dataschema"] = schema;
    if (options.key !== undefined) headers["ce-partitionkey"] = options.key;
    const response = await fetch(`${this.baseUrl}/events`, {
      method: "POST",
      headers,
      body: JSON.stringify(data),
    });
    const body: unknown = await response.json();
    if (!response.ok) throw new TidingsError(response.status, body as Record<string, unknown>);
    return body as { ids: string[]; positions: number[] };
  }

  /** The events on `pattern` as they are logged (from position `after`, else live). */
  async *subscribe<K extends keyof Topics>(
    pattern: K | string,
    options: { after?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<CloudEvent<K extends keyof Topics ? Topics[K] : unknown>> {
    const query = new URLSearchParams({ topic: String(pattern) });
    if (options.after !== undefined) query.set("after", String(options.after));
    const response = await fetch(`${this.baseUrl}/events?${query}`, {
      headers: { ...this.headers(), accept: "text/event-stream" },
      signal: options.signal,
    });
    if (!response.ok || response.body === null) {
      throw new TidingsError(response.status, (await response.json()) as Record<string, unknown>);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf("\\n\\n");
      while (end >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = frame
          .split("\\n")
          .filter((line) => line.startsWith("data: "))
          .map((line) => line.slice(6))
          .join("\\n");
        if (data) yield JSON.parse(data) as CloudEvent<K extends keyof Topics ? Topics[K] : unknown>;
        end = buffer.indexOf("\\n\\n");
      }
    }
  }
}
"""


def typescript_client(doc: dict[str, Any]) -> str:
    """The TypeScript module for AsyncAPI document ``doc`` (see the module docstring)."""
    writer = _Writer(doc)
    components = doc.get("components", {})
    title = json.dumps(doc.get("info", {}).get("title", ""))
    out = [
        f"// Generated by `tidings asyncapi --typescript` from the AsyncAPI document {title}.",
        "// Do not edit.",
        "/* eslint-disable */",
        "",
    ]
    for name, schema in components.get("schemas", {}).items():
        out.append(f"export type {_type_name(name)} = {writer.ts(schema)};")
        out.append("")
    message_types: dict[str, str] = {}
    for key, message in components.get("messages", {}).items():
        type_name = _type_name(message.get("name", key))
        if type_name in message_types.values():
            type_name = _type_name(key)
        message_types[key] = type_name
        summary = message.get("summary") or message.get("title") or key
        out.append(f"/** {summary} */")
        out.append(f"export type {type_name} = {writer.ts(message.get('payload', {}))};")
        out.append("")
    topics: dict[str, list[str]] = {}
    dataschemas: dict[str, str] = {}
    for channel in doc.get("channels", {}).values():
        address = channel.get("address")
        if not isinstance(address, str) or "*" in address or ">" in address:
            continue
        for ref in channel.get("messages", {}).values():
            key = ref["$ref"].rsplit("/", 1)[1]
            topics.setdefault(address, [])
            if message_types[key] not in topics[address]:
                topics[address].append(message_types[key])
            uri = components["messages"][key].get("x-tidings-dataschema")
            if uri:
                dataschemas[address] = uri
    out.append("/** Each topic's event type. */")
    out.append("export interface Topics {")
    out.extend(f"  {json.dumps(a)}: {' | '.join(topics[a])};" for a in sorted(topics))
    out.append("}")
    out.append("")
    out.append("/** Each topic's schema version (CloudEvents dataschema). */")
    out.append("export const DATASCHEMAS: { [K in keyof Topics]?: string } = {")
    out.extend(f"  {json.dumps(a)}: {json.dumps(dataschemas[a])}," for a in sorted(dataschemas))
    out.append("};")
    out.append(_CLIENT)
    return "\n".join(out)
