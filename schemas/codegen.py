"""What the generated Avro readers and writers share: fresh names, constants held in the
module's scope, one function per named record, and compiling the module."""

from __future__ import annotations

from typing import Any

PRIMITIVE = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class Source:
    """The source of one generated module, built from a record schema as fastavro parses it
    (named types by full name in `__named_schemas`)."""

    def __init__(self, parsed_schema: dict[str, Any]) -> None:
        self.named: dict[str, Any] = dict(parsed_schema.get("__named_schemas", {}))
        self.functions: dict[str, list[str]] = {}  # full name -> source lines
        self.function_names: dict[str, str] = {}  # full name -> its function's name
        self.constants: dict[str, Any] = {}
        self.counter = 0

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def constant(self, stem: str, value: Any) -> str:
        name = self.fresh(f"_{stem}")
        self.constants[name] = value
        return name

    def function(self, schema: dict[str, Any]) -> str:
        """The generated function of the record `schema`, written once per name."""
        full = schema["name"]
        if full in self.function_names:
            return self.function_names[full]
        # Numbered: names that differ only in their dots and underscores stay apart.
        fn = self.fresh("_rec_" + "".join(c if c.isalnum() else "_" for c in full) + "_")
        # Named before its fields are written: a field may refer to this record.
        self.function_names[full] = fn
        self.functions[full] = self.record(fn, schema)
        return fn

    def record(self, fn: str, schema: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def value(self, schema: Any, var: str, ind: str) -> list[str]:
        """The lines of one value of `schema` held in `var`: unions, primitives and named
        types resolved here, every other type by `typed`."""
        if isinstance(schema, list):
            return self.union(schema, var, ind)
        if isinstance(schema, str):
            if schema in PRIMITIVE:
                return self.primitive(schema, var, ind)
            return self.value(self.named[schema], var, ind)
        kind = schema["type"]
        if isinstance(kind, (dict, list)):
            return self.value(kind, var, ind)
        return self.typed(schema, kind, var, ind)

    def typed(self, schema: dict[str, Any], kind: str, var: str, ind: str) -> list[str]:
        raise NotImplementedError

    def union(self, branches: list[Any], var: str, ind: str) -> list[str]:
        raise NotImplementedError

    def primitive(self, kind: str, var: str, ind: str) -> list[str]:
        raise NotImplementedError

    def build(self, parsed_schema: dict[str, Any], tail: str, scope: dict[str, Any]) -> Any:
        """Compile the functions of `parsed_schema` and `tail` (which calls the top record's
        function, named `{top}` in it); returns the module's scope. ValueError for a schema
        too deep to compile."""
        what = f"schema {parsed_schema['name']} nests too deeply to compile"
        try:
            top = self.function(parsed_schema)
        except RecursionError as exc:
            raise ValueError(what) from exc
        source = "\n\n".join("\n".join(lines) for lines in self.functions.values())
        source += "\n\n" + tail.replace("{top}", top)
        try:
            code = compile(source, f"<avro {parsed_schema['name']}>", "exec")
        except (SyntaxError, RecursionError) as exc:  # nested deeper than Python's blocks go
            raise ValueError(what) from exc
        scope = {**scope, **self.constants}
        exec(code, scope)
        return scope
