"""The ledger mapping: which Sage ledger account (and tax rate) each CRM product goes to.

`config/ledger_mappings.yaml` is what ops edit. It is loaded into a frozen model and validated as
a whole; an invalid file is refused with every problem listed by line, and nothing of it is used.
The version in force lives in the database (`app.mapping_store`), so every process uses the same.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.domain import LineItem

MATCH_KINDS = ("element_id", "sku", "product_type")


class MappingError(ValueError):
    """The mapping file cannot be used; `problems` lists each one, with its line where known."""

    def __init__(
        self,
        source: str,
        problems: list[str],
        *,
        unverifiable: bool = False,
        valid_part: LedgerMapping | None = None,
    ) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems
        # True when the file may be fine but the accounting system could not be asked.
        self.unverifiable = unverifiable
        # The defaults and rules that are valid on their own, so their ids can be checked too
        # and every problem named at once.
        self.valid_part = valid_part


class Match(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    element_id: int | None = None
    sku: str | None = Field(default=None, min_length=1)
    product_type: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Match:
        given = [k for k in MATCH_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"match needs exactly one of {', '.join(MATCH_KINDS)}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in MATCH_KINDS if getattr(self, k) is not None)

    @property
    def key(self) -> tuple[str, str]:
        """What a line is matched on: SKUs and types ignoring case."""
        return self.kind, self.value.casefold()

    @property
    def value(self) -> str:
        return str(getattr(self, self.kind))


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    match: Match
    ledger_account_id: str = Field(min_length=1)
    tax_rate_id: str | None = Field(default=None, min_length=1)


class Defaults(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tax_rate_id: str | None = Field(default=None, min_length=1)
    # A catch-all account. Unset by default: an unmapped line must reach a person, not a guess.
    ledger_account_id: str | None = Field(default=None, min_length=1)


class MappingFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1, le=1)
    defaults: Defaults = Defaults()
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Mapped:
    ledger_account_id: str
    tax_rate_id: str | None
    matched_by: str


@dataclass(frozen=True)
class Written:
    """Where a rule is in the file and how it reads there: how every message names it."""

    line: int
    match: str  # e.g. "match: {sku: WID-01}", as written
    fields: dict[str, int]  # the line of each of its keys

    def at(self, key: str) -> str:
        return f"line {self.fields.get(key, self.line)}: rule '{self.match}'"


@dataclass(frozen=True)
class LedgerMapping:
    source: str
    sha256: str
    file: MappingFile
    rules_written: tuple[Written, ...] = ()
    defaults_line: int = 1

    def resolve(self, line: LineItem) -> Mapped | None:
        index = {rule.match.key: rule for rule in self.file.rules}
        for kind, value in _line_keys(line):
            rule = index.get((kind, value.casefold()))
            if rule is not None:
                tax = rule.tax_rate_id or self.file.defaults.tax_rate_id
                return Mapped(rule.ledger_account_id, tax, f"{kind}={value}")
        if self.file.defaults.ledger_account_id is not None:
            return Mapped(
                self.file.defaults.ledger_account_id, self.file.defaults.tax_rate_id, "default"
            )
        return None

    def unknown_ids(self, *, ledger_accounts: set[str], tax_rates: set[str]) -> list[str]:
        """Each entry naming a ledger account or tax rate the accounting system doesn't have."""
        problems = []
        for rule, written in zip(self.file.rules, self.rules_written, strict=True):
            if rule.ledger_account_id not in ledger_accounts:
                problems.append(
                    f"{written.at('ledger_account_id')}: ledger_account_id "
                    f"{rule.ledger_account_id!r} is not a sales ledger account in Sage"
                )
            if rule.tax_rate_id and rule.tax_rate_id not in tax_rates:
                problems.append(
                    f"{written.at('tax_rate_id')}: tax_rate_id {rule.tax_rate_id!r} is not in Sage"
                )
        defaults = self.file.defaults
        where = f"line {self.defaults_line}: defaults"
        if defaults.ledger_account_id and defaults.ledger_account_id not in ledger_accounts:
            problems.append(f"{where}: ledger_account_id {defaults.ledger_account_id!r} unknown")
        if defaults.tax_rate_id and defaults.tax_rate_id not in tax_rates:
            problems.append(f"{where}: tax_rate_id {defaults.tax_rate_id!r} is not in Sage")
        return problems

    def covers(self, line: LineItem) -> bool:
        return self.resolve(line) is not None


def _line_keys(line: LineItem) -> Iterable[tuple[str, str]]:
    """The keys a line can be matched by, most specific first."""
    yield "element_id", line.element_id
    if line.sku:
        yield "sku", line.sku
    if line.product_type:
        yield "product_type", line.product_type


def load_mapping(path: Path) -> LedgerMapping:
    return parse_mapping(read_mapping_text(path), source=str(path))


def read_mapping_text(path: Path) -> str:
    """The file as stored, byte for byte (no newline translation), so its sha256 is the file's."""
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise MappingError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise MappingError(str(path), [f"not UTF-8 text (byte {exc.start})"]) from exc


def parse_mapping(text: str, *, source: str) -> LedgerMapping:
    """The file as a mapping, or MappingError naming every problem found in it by line (and
    holding its valid part)."""
    root, data = _yaml(text, source)
    problems = list(_duplicate_keys(root))
    parsed, invalid = _validate(data, root, text)
    problems += invalid
    valid_part = _valid_part(data, parsed, root, text, source)
    if valid_part is not None:
        problems += _semantic_problems(valid_part)
    if problems:
        raise MappingError(source, sort_by_line(problems), valid_part=valid_part)
    assert valid_part is not None
    return valid_part


def sort_by_line(problems: list[str]) -> list[str]:
    """In the file's order (stable); problems with no line last."""
    return sorted(problems, key=_line_number)


def _line_number(problem: str) -> int:
    found = re.match(r"line (\d+)", problem)
    return int(found.group(1)) if found else sys.maxsize


def _yaml(text: str, source: str) -> tuple[Any, dict[str, Any]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        raise MappingError(source, [_yaml_problem(exc, source)]) from exc
    except yaml.YAMLError as exc:
        raise MappingError(source, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise MappingError(source, ["the file must be a mapping with 'version' and 'rules'"])
    return root, data


def _yaml_problem(exc: yaml.MarkedYAMLError, source: str) -> str:
    """One line, naming the file (PyYAML would say "<unicode string>")."""
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
    problem = f"{where}: not valid YAML in {source}: {exc.problem or exc.context}"
    if exc.context and exc.problem and exc.context_mark is not None:
        started = exc.context_mark
        problem += f" ({exc.context} from line {started.line + 1}, column {started.column + 1})"
    return problem


def _validate(data: dict[str, Any], root: Any, text: str) -> tuple[MappingFile | None, list[str]]:
    try:
        return MappingFile.model_validate(data), []
    except ValidationError as exc:
        return None, [_describe(err["loc"], err["msg"], root, text) for err in exc.errors()]


def _valid_part(
    data: dict[str, Any], parsed: MappingFile | None, root: Any, text: str, source: str
) -> LedgerMapping | None:
    """The whole file when it is valid; else its defaults and each rule valid on their own
    (for the checks that need them), or None when not even the defaults can be read."""
    if parsed is not None:
        indexes: list[int] = list(range(len(parsed.rules)))
    else:
        try:
            defaults = Defaults.model_validate(data.get("defaults") or {})
        except ValidationError:
            return None
        valid = _valid_rules(data)
        indexes = [i for i, _ in valid]
        parsed = MappingFile(version=1, defaults=defaults, rules=tuple(r for _, r in valid))
    return LedgerMapping(
        source=source,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        file=parsed,
        rules_written=tuple(_written(root, i, text) for i in indexes),
        defaults_line=_line_for(root, ("defaults",)),
    )


def _valid_rules(data: dict[str, Any]) -> list[tuple[int, Rule]]:
    raw = data.get("rules")
    if not isinstance(raw, list):
        return []
    valid = []
    for i, item in enumerate(raw):
        try:
            valid.append((i, Rule.model_validate(item)))
        except ValidationError:
            continue
    return valid


def _semantic_problems(mapping: LedgerMapping) -> list[str]:
    problems: list[str] = []
    seen: dict[tuple[str, str], Written] = {}
    no_default_tax = mapping.file.defaults.tax_rate_id is None
    for rule, written in zip(mapping.file.rules, mapping.rules_written, strict=True):
        first = seen.setdefault(rule.match.key, written)
        if first is not written:
            problems.append(
                f"{written.at('match')}: matches {rule.match.kind} {rule.match.value!r} like the "
                f"rule on line {first.line} ('{first.match}'){_ignoring_case(rule.match)}: keep one"
            )
        if rule.tax_rate_id is None and no_default_tax:
            problems.append(
                f"{written.at('match')}: names no tax_rate_id and defaults.tax_rate_id is unset"
            )
    return problems


def _ignoring_case(match: Match) -> str:
    return "" if match.kind == "element_id" else " (compared ignoring case)"


def _duplicate_keys(node: Any) -> Iterator[str]:
    """Each key repeated within one YAML mapping: YAML keeps only the last one, silently."""
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key, _value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                continue
            line = int(key.start_mark.line) + 1
            if (key.tag, key.value) in first:
                yield (
                    f"line {line}: duplicate key {key.value!r} (first on line "
                    f"{first[key.tag, key.value]}): YAML keeps only the last one and silently "
                    "drops the others; keep one and put everything under it"
                )
            first.setdefault((key.tag, key.value), line)
        children = [value for _key, value in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    else:
        return
    for child in children:
        yield from _duplicate_keys(child)


def _describe(loc: tuple[int | str, ...], message: str, root: Any, text: str) -> str:
    """A validation error by line; one inside a rule names the rule as written."""
    line = _line_for(root, loc)
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        written = _written(root, loc[1], text)
        inside = ".".join(str(p) for p in loc[2:])
        return f"line {line}: rule '{written.match}': {inside + ': ' if inside else ''}{message}"
    path = ".".join(str(p) for p in loc) or "(top level)"
    return f"line {line}: {path}: {message}"


def _line_for(root: Any, loc: tuple[int | str, ...]) -> int:
    """The 1-based line of the deepest YAML node that `loc` reaches."""
    node = root
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1 if node is not None else 1


def _child(node: Any, part: int | str) -> Any:
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if k.value == part), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None


def _written(root: Any, index: int, text: str) -> Written:
    """Rule `index` as the file has it: its line, its match as written, its keys' lines."""
    node = _child(_child(root, "rules"), index)
    if not isinstance(node, yaml.MappingNode):
        line = _line_for(root, ("rules", index))
        return Written(line, _as_written(text, node) if node is not None else "?", {})
    fields = {k.value: int(k.start_mark.line) + 1 for k, _ in node.value}
    match = next(((k, v) for k, v in node.value if k.value == "match"), None)
    shown = _as_written(text, match[0], match[1]) if match else _as_written(text, node)
    return Written(int(node.start_mark.line) + 1, shown, fields)


def _as_written(text: str, first: Any, last: Any | None = None) -> str:
    """The source from one node to another, comments dropped, on one line (80 characters)."""
    end = (last or first).end_mark.index
    source = text[first.start_mark.index : end]
    one_line = " ".join(_COMMENT.sub("", row).strip() for row in source.splitlines())
    one_line = " ".join(one_line.split())
    return one_line if len(one_line) <= 80 else one_line[:79] + "…"


_COMMENT = re.compile(r"\s+#.*$")
