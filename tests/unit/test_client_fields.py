"""The one table of client registration fields: the CLI, the registration API and the admin
pages take their names from ``authserver.domain.client_metadata.CLIENT_FIELDS``."""

from __future__ import annotations

import dataclasses

from authserver.cli import clients as cli_clients
from authserver.domain import client_metadata as rules


def test_the_table_has_each_client_spec_field_once_in_order():
    assert [f.name for f in rules.CLIENT_FIELDS] == rules.SPEC_FIELDS == [
        f.name for f in dataclasses.fields(rules.ClientSpec)]
    kinds = {rules.BOOL, rules.LIST, rules.TTL, rules.CHOICE, rules.TEXT}
    assert all(f.kind in kinds for f in rules.CLIENT_FIELDS)
    assert all((f.bounds is not None) == (f.kind == rules.TTL) for f in rules.CLIENT_FIELDS)
    assert all(f.choices for f in rules.CLIENT_FIELDS if f.kind == rules.CHOICE)


def test_each_name_is_used_once_by_each_editor():
    for attribute in ("api", "option", "label"):
        names = [getattr(f, attribute) for f in rules.CLIENT_FIELDS]
        assert len(set(names)) == len(names), attribute


def test_every_option_the_table_names_is_one_of_the_cli_commands():
    """What an error message names is an option the operator can type."""
    create = {opt for p in cli_clients.create.params for opt in p.opts}
    update = {opt for p in cli_clients.update.params for opt in p.opts}
    for f in rules.CLIENT_FIELDS:
        assert f.option in create, f.name
        assert f.option in update or f.name == "public", f.name
    choices = {p.name: tuple(p.type.choices) for p in cli_clients.create.params
               if hasattr(p.type, "choices")}
    for f in rules.CLIENT_FIELDS:
        if f.choices:
            assert choices[f.name] == f.choices, f.name
