"""Custom attributes: the CustomFieldsManager's definitions and the values set on managed entities.

`AddCustomFieldDef` defines a field (for one managed object type, or for all); `SetField` and
an entity's `setCustomValue` (by field name) set a value, seen in the entity's `customValue`
(and `value`, and a VM's or host's `summary.customValue`); `availableField` lists the fields that
apply to the entity's type. Definitions are sorted by name, as vCenter lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pyVmomi import VmomiSupport, vim, vmodl

from .dispatch import Ctx, method
from .events import record_entity

if TYPE_CHECKING:
    from .mo import MO

FIRST_KEY = 101


@dataclass
class CustomFields:
    defs: dict[int, Any] = field(default_factory=dict)  # key -> vim.CustomFieldDef
    values: dict[str, dict[int, str]] = field(default_factory=dict)  # entity moid -> key -> value
    next_key: int = FIRST_KEY

    def sorted_defs(self) -> list[Any]:
        return sorted(self.defs.values(), key=lambda d: (d.name, d.key))

    def applies(self, d: Any, mo: MO) -> bool:
        if not d.managedObjectType:
            return True
        return isinstance(mo.ref, d.managedObjectType)

    def available(self, mo: MO) -> list[Any]:
        return [d for d in self.sorted_defs() if self.applies(d, mo)]

    def of(self, mo: MO) -> list[Any]:
        vals = self.values.get(mo.moid, {})
        return [vim.CustomFieldsManager.StringValue(key=k, value=v) for k, v in sorted(vals.items())
                if k in self.defs]


def _fields(ctx: Ctx) -> CustomFields:
    return ctx.twin.world.custom_fields


def _mo_type(name: Any) -> Any:
    """The managed object type a field is for (`moType` arrives as a type, or as its wsdl name)."""
    if not name:
        return None
    if isinstance(name, type):
        typ: Any = name
    else:
        try:
            typ = VmomiSupport.GetWsdlType("urn:vim25", str(name))
        except KeyError:
            typ = None
    if typ is None or not issubclass(typ, VmomiSupport.ManagedObject):
        raise vmodl.fault.InvalidArgument(msg=f"'{name}' is not a managed object type", invalidProperty="moType")
    return typ


@method("AddCustomFieldDef")
def add_field(ctx: Ctx, this: MO, name: str, moType: str | None = None, fieldDefPolicy: Any = None,  # noqa: N803
              fieldPolicy: Any = None) -> Any:  # noqa: N803
    fields = _fields(ctx)
    typ = _mo_type(moType)
    if not name:
        raise vmodl.fault.InvalidArgument(msg="name must not be empty", invalidProperty="name")
    for d in fields.defs.values():
        if d.name == name and (d.managedObjectType is None or typ is None or d.managedObjectType is typ):
            raise vim.fault.DuplicateName(msg=f"The name '{name}' already exists.", name=name, object=this.ref)
    key = fields.next_key
    fields.next_key += 1
    policy = vim.PrivilegePolicyDef(createPrivilege="System.Read", readPrivilege="System.Read",
                                    updatePrivilege="System.Read", deletePrivilege="System.Read")
    d = vim.CustomFieldsManager.FieldDef(key=key, name=name, type=str, managedObjectType=typ,
                           fieldDefPrivileges=fieldDefPolicy or policy, fieldInstancePrivileges=fieldPolicy or policy)
    fields.defs[key] = d
    _touch_all(ctx, this)
    ctx.twin.events.post(vim.event.CustomFieldDefAddedEvent, user=ctx.user, message=f"Created new custom field "
                         f"definition {name}", fieldKey=key, name=name)
    return d


@method("RemoveCustomFieldDef")
def remove_field(ctx: Ctx, this: MO, key: int) -> None:
    fields = _fields(ctx)
    if fields.defs.pop(int(key), None) is None:
        raise vim.fault.NotFound(msg=f"No custom field with key {key}")
    for vals in fields.values.values():
        vals.pop(int(key), None)
    _touch_all(ctx, this)


@method("RenameCustomFieldDef")
def rename_field(ctx: Ctx, this: MO, key: int, name: str) -> None:
    fields = _fields(ctx)
    d = fields.defs.get(int(key))
    if d is None:
        raise vim.fault.NotFound(msg=f"No custom field with key {key}")
    if any(o.name == name and o.key != d.key for o in fields.defs.values()):
        raise vim.fault.DuplicateName(msg=f"The name '{name}' already exists.", name=name, object=this.ref)
    d.name = name
    _touch_all(ctx, this)


@method("SetField")
def set_field(ctx: Ctx, this: MO, entity: Any, key: int, value: str) -> None:
    target = ctx.twin.resolve(entity, ctx.session)
    d = _fields(ctx).defs.get(int(key))
    if d is None or not _fields(ctx).applies(d, target):
        raise vmodl.fault.InvalidArgument(msg=f"No custom field with key {key} for {target.moid}",
                                          invalidProperty="key")
    _set(ctx, target, d, value)


@method("setCustomValue")
def set_custom_value(ctx: Ctx, this: MO, key: str, value: str) -> None:
    fields = _fields(ctx)
    d = next((d for d in fields.available(this) if d.name == key), None)
    if d is None:
        raise vmodl.fault.InvalidArgument(msg=f"No custom field named '{key}'", invalidProperty="key")
    _set(ctx, this, d, value)


def _set(ctx: Ctx, target: MO, d: Any, value: str) -> None:
    vals = _fields(ctx).values.setdefault(target.moid, {})
    before = vals.get(d.key, "")
    if value:
        vals[d.key] = value
    else:
        vals.pop(d.key, None)
    changed = getattr(target, "changed", None)
    if callable(changed):
        changed()
    else:
        ctx.twin.world.touch(target)
    name = getattr(target, "name", target.moid)
    record_entity(ctx, vim.event.CustomFieldValueChangedEvent, target,
                  f"Changed custom field {d.name} on {name} to {value}",
                  entity=vim.event.ManagedEntityEventArgument(name=name, entity=target.ref), fieldKey=d.key,
                  name=d.name, value=value, prevState=before)


def _touch_all(ctx: Ctx, manager: MO) -> None:
    """Every entity's `availableField` follows the definitions."""
    world = ctx.twin.world
    world.touch(manager)
    for mo in list(world.objects.values()):
        if isinstance(mo.ref, vim.ManagedEntity):
            world.touch(mo)
