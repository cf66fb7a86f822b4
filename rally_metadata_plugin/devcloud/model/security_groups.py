"""Neutron's security groups and their rules.

Every project has a ``default`` group, created on first use as neutron does
(listing networks or security groups, creating a port, booting a server);
rally's cleanup leaves it alone. Every new group allows all egress. Nova's
``security_groups`` of a boot request name groups of the project.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.model.common import (UNSET, Unset,
                                                         apply_updates,
                                                         isotime, lookup,
                                                         new_id,
                                                         owning_project,
                                                         utcnow)
from rally_metadata_plugin.devcloud.model.identity import Caller

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend

DEFAULT_GROUP = "default"
DIRECTIONS = ("ingress", "egress")
ETHERTYPES = ("IPv4", "IPv6")


@dataclasses.dataclass
class SecurityGroupRule:
    id: str
    security_group_id: str
    project_id: str
    direction: str
    ethertype: str
    protocol: str | None = None
    port_range_min: int | None = None
    port_range_max: int | None = None
    remote_ip_prefix: str | None = None
    remote_group_id: str | None = None
    description: str = ""
    created_at: str = ""

    def key(self) -> tuple:
        """Identity for duplicate detection: "everything" prefixes equal
        no prefix, as in neutron."""
        prefix = (None if self.remote_ip_prefix in ("0.0.0.0/0", "::/0")
                  else self.remote_ip_prefix)
        return (self.direction, self.ethertype, self.protocol,
                self.port_range_min, self.port_range_max, prefix,
                self.remote_group_id)


@dataclasses.dataclass
class SecurityGroup:
    id: str
    name: str
    project_id: str
    description: str = ""
    rules: list[SecurityGroupRule] = dataclasses.field(default_factory=list)
    created_at: str = ""


class SecurityGroupBackend:
    """Security groups and rules (the lock is the cloud's)."""

    def __init__(self, cloud: CloudBackend) -> None:
        self._cloud = cloud
        self.security_groups: dict[str, SecurityGroup] = {}

    # -- the default group, and nova's view -----------------------------------

    def ensure_default_group(self, project_id: str) -> None:
        """Neutron creates a project's ``default`` group on first use; the
        other services call this before they need it."""
        with self._cloud.lock:
            if any(g.project_id == project_id and g.name == DEFAULT_GROUP
                   for g in self.security_groups.values()):
                return
            group = self._new_group(project_id, DEFAULT_GROUP,
                                    "Default security group")
            for ethertype in ETHERTYPES:
                group.rules.append(SecurityGroupRule(
                    new_id(), group.id, project_id, "ingress", ethertype,
                    remote_group_id=group.id, created_at=group.created_at))

    def default_group(self, project_id: str) -> SecurityGroup:
        """The project's ``default`` group (call :meth:`ensure_default_group`
        first)."""
        with self._cloud.lock:
            return next(g for g in self.security_groups.values()
                        if g.project_id == project_id
                        and g.name == DEFAULT_GROUP)

    def group_for_server(self, caller: Caller, name_or_id: str
                         ) -> SecurityGroup:
        """The group a boot request names (compute's error if none)."""
        with self._cloud.lock:
            for group in self.security_groups.values():
                if group.project_id == caller.project_id and name_or_id in (
                        group.id, group.name):
                    return group
        raise exc.NovaBadRequest(f"Security group {name_or_id} not found "
                                 f"for project {caller.project_id}.")

    def _new_group(self, project_id: str, name: str,
                   description: str) -> SecurityGroup:
        group = SecurityGroup(new_id(), name, project_id, description,
                              created_at=isotime(utcnow()))
        # every new group allows all egress, as in neutron
        for ethertype in ETHERTYPES:
            group.rules.append(SecurityGroupRule(
                new_id(), group.id, project_id, "egress", ethertype,
                created_at=group.created_at))
        self.security_groups[group.id] = group
        return group

    # -- groups ---------------------------------------------------------------

    def list_security_groups(self, caller: Caller) -> list[SecurityGroup]:
        with self._cloud.lock:
            self.ensure_default_group(caller.project_id)
            return [g for g in self.security_groups.values()
                    if caller.owns(g.project_id)]

    def get_security_group(self, caller: Caller, sg_id: str) -> SecurityGroup:
        with self._cloud.lock:
            self.ensure_default_group(caller.project_id)
            return lookup(self.security_groups, sg_id,
                          lambda g: caller.owns(g.project_id),
                          exc.SecurityGroupNotFound)

    def create_security_group(self, caller: Caller, *, name: str = "",
                              description: str = "",
                              project_id: str | None = None) -> SecurityGroup:
        with self._cloud.lock:
            project = owning_project(caller, project_id)
            self.ensure_default_group(project)
            if name == DEFAULT_GROUP:
                raise exc.SecurityGroupDefaultAlreadyExists()
            return self._new_group(project, name, description)

    def update_security_group(self, caller: Caller, sg_id: str, *,
                              name: str | Unset = UNSET,
                              description: str | Unset = UNSET
                              ) -> SecurityGroup:
        with self._cloud.lock:
            group = self.get_security_group(caller, sg_id)
            apply_updates(group, name=name, description=description)
            return group

    def delete_security_group(self, caller: Caller, sg_id: str) -> None:
        with self._cloud.lock:
            group = self.get_security_group(caller, sg_id)
            if group.name == DEFAULT_GROUP and not caller.is_admin:
                raise exc.SecurityGroupCannotRemoveDefault()
            if self._cloud.network.security_group_in_use(sg_id):
                raise exc.SecurityGroupInUse(sg_id)
            del self.security_groups[sg_id]

    # -- rules ----------------------------------------------------------------

    def list_security_group_rules(self, caller: Caller
                                  ) -> list[SecurityGroupRule]:
        return [r for g in self.list_security_groups(caller)
                for r in g.rules]

    def get_security_group_rule(self, caller: Caller, rule_id: str
                                ) -> SecurityGroupRule:
        for rule in self.list_security_group_rules(caller):
            if rule.id == rule_id:
                return rule
        raise exc.SecurityGroupRuleNotFound(rule_id)

    def create_security_group_rule(
            self, caller: Caller, *, security_group_id: str,
            direction: str | None, ethertype: str = "IPv4",
            protocol: str | None = None, port_range_min: int | None = None,
            port_range_max: int | None = None,
            remote_ip_prefix: str | None = None,
            remote_group_id: str | None = None,
            description: str = "") -> SecurityGroupRule:
        """A rule in a group of the caller's; duplicates are refused."""
        with self._cloud.lock:
            group = self.get_security_group(caller, security_group_id)
            if direction not in DIRECTIONS:
                raise exc.NeutronBadRequest(
                    f"Invalid input for direction: {direction!r}")
            if ethertype not in ETHERTYPES:
                raise exc.NeutronBadRequest(
                    f"Invalid input for ethertype: {ethertype!r}")
            rule = SecurityGroupRule(
                new_id(), group.id, group.project_id, direction, ethertype,
                protocol=protocol, port_range_min=port_range_min,
                port_range_max=port_range_max,
                remote_ip_prefix=remote_ip_prefix,
                remote_group_id=remote_group_id, description=description,
                created_at=isotime(utcnow()))
            if any(r.key() == rule.key() for r in group.rules):
                raise exc.SecurityGroupRuleExists()
            group.rules.append(rule)
            return rule

    def delete_security_group_rule(self, caller: Caller, rule_id: str) -> None:
        with self._cloud.lock:
            rule = self.get_security_group_rule(caller, rule_id)
            self.security_groups[rule.security_group_id].rules.remove(rule)
