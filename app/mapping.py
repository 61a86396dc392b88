"""The ledger mapping: which Sage ledger account (and tax rate) each CRM product goes to.

`config/ledger_mappings.yaml` is what ops edit. It is loaded into a frozen model and validated as
a whole; an invalid file is refused with every problem listed by line, and nothing of it is used.
The version in force lives in the database (`app.mapping_store`), so every process uses the same.
"""

from __future__ import annotations

import hashlib
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

    def __init__(self, source: str, problems: list[str], *, unverifiable: bool = False) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems
        # True when the file may be fine but the accounting system could not be asked.
        self.unverifiable = unverifiable


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
        value = getattr(self, self.kind)
        return self.kind, str(value).casefold()


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
class LedgerMapping:
    source: str
    sha256: str
    file: MappingFile
    rule_lines: tuple[int, ...] = ()
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
        for i, (rule, line) in enumerate(zip(self.file.rules, self.rule_lines, strict=False)):
            where = f"line {line}: rule {i + 1} ({rule.match.kind}={rule.match.key[1]!r})"
            if rule.ledger_account_id not in ledger_accounts:
                problems.append(
                    f"{where}: ledger_account_id {rule.ledger_account_id!r} is not a sales "
                    "ledger account in Sage"
                )
            if rule.tax_rate_id and rule.tax_rate_id not in tax_rates:
                problems.append(f"{where}: tax_rate_id {rule.tax_rate_id!r} is not in Sage")
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
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MappingError(source, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(data, dict):
        raise MappingError(source, ["the file must be a mapping with 'version' and 'rules'"])
    if duplicates := list(_duplicate_keys(root)):
        raise MappingError(source, duplicates)
    try:
        parsed = MappingFile.model_validate(data)
    except ValidationError as exc:
        raise MappingError(source, _describe(exc, root)) from exc
    problems = _semantic_problems(parsed, root)
    if problems:
        raise MappingError(source, problems)
    digest = hashlib.sha256(text.encode()).hexdigest()
    lines = tuple(_rule_line(root, i) for i in range(len(parsed.rules)))
    return LedgerMapping(
        source=source,
        sha256=digest,
        file=parsed,
        rule_lines=lines,
        defaults_line=_line_for(root, ("defaults",)),
    )


def _semantic_problems(parsed: MappingFile, root: Any) -> list[str]:
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for i, rule in enumerate(parsed.rules):
        where = _rule_line(root, i)
        if rule.match.key in seen:
            first = seen[rule.match.key]
            problems.append(
                f"line {where}: rule {i + 1} matches {rule.match.kind}={rule.match.key[1]!r}, "
                f"already matched by rule {first + 1} (line {_rule_line(root, first)})"
            )
        seen.setdefault(rule.match.key, i)
        if rule.tax_rate_id is None and parsed.defaults.tax_rate_id is None:
            problems.append(
                f"line {where}: rule {i + 1} names no tax_rate_id and defaults.tax_rate_id is unset"
            )
    return problems


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


def _describe(exc: ValidationError, root: Any) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = err["loc"]
        line = _line_for(root, loc)
        path = ".".join(str(p) for p in loc) or "(top level)"
        problems.append(f"line {line}: {path}: {err['msg']}")
    return problems


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


def _rule_line(root: Any, index: int) -> int:
    return _line_for(root, ("rules", index))
