"""Keystone's part of the model: projects, users and tokens.

Every user lives alone in its own project and has its roles there; all
domains are ``Default``. A :class:`Caller` is what the other services know
of a request's token: who asks, for which project, and whether as admin.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from typing import TYPE_CHECKING, Iterable

from rally_metadata_plugin.devcloud import exceptions as exc
from rally_metadata_plugin.devcloud.config import UserSpec
from rally_metadata_plugin.devcloud.model.common import new_id, utcnow

if TYPE_CHECKING:
    from rally_metadata_plugin.devcloud.model.backend import CloudBackend

TOKEN_LIFETIME = datetime.timedelta(hours=12)
DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"


@dataclasses.dataclass
class Project:
    id: str
    name: str
    domain_id: str = DEFAULT_DOMAIN_ID


@dataclasses.dataclass
class User:
    id: str
    name: str
    password: str
    project_id: str
    roles: tuple[str, ...]
    domain_id: str = DEFAULT_DOMAIN_ID


@dataclasses.dataclass
class Token:
    id: str
    user: User
    project: Project | None
    issued_at: datetime.datetime
    expires_at: datetime.datetime

    @property
    def roles(self) -> tuple[str, ...]:
        return self.user.roles if self.project else ()


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who makes a request: derived from a validated token."""

    user_id: str
    project_id: str
    is_admin: bool

    @classmethod
    def of(cls, token: Token) -> "Caller":
        if token.project is None:
            raise exc.Unauthorized("The request requires a project-scoped "
                                   "token.")
        return cls(token.user.id, token.project.id, "admin" in token.roles)

    def owns(self, project_id: str) -> bool:
        """Whether a resource of ``project_id`` is the caller's (admins own
        everything)."""
        return self.is_admin or project_id == self.project_id


class IdentityBackend:
    """Projects, users and tokens (the lock is the cloud's)."""

    def __init__(self, cloud: CloudBackend) -> None:
        self._cloud = cloud
        self.projects: dict[str, Project] = {}
        self.users: dict[str, User] = {}
        self.tokens: dict[str, Token] = {}

    def seed(self, users: Iterable[UserSpec]) -> None:
        """One project per configured user; admins get the admin role."""
        for spec in users:
            project = Project(new_id().replace("-", ""), spec.project)
            self.projects[project.id] = project
            roles = ("admin", "member", "reader") if spec.admin else (
                "member", "reader")
            user = User(new_id().replace("-", ""), spec.name, spec.password,
                        project.id, roles)
            self.users[user.id] = user

    @property
    def admin_project(self) -> Project:
        """The project of the (only) admin user: owner of what is seeded."""
        with self._cloud.lock:
            admin = next(u for u in self.users.values() if "admin" in u.roles)
            return self.projects[admin.project_id]

    # -- tokens ---------------------------------------------------------------

    def authenticate(self, *, user_name: str | None, user_id: str | None,
                     password: str, project_name: str | None = None,
                     project_id: str | None = None) -> Token:
        """Password authentication; domains are all ``Default``."""
        with self._cloud.lock:
            user = next((u for u in self.users.values()
                         if (user_id and u.id == user_id)
                         or (not user_id and u.name == user_name)), None)
            if user is None or user.password != password:
                raise exc.AuthenticationRequired()
            return self._issue_token(user, project_name, project_id)

    def rescope(self, token_id: str, project_name: str | None,
                project_id: str | None) -> Token:
        """The ``token`` auth method: a new token for the same user."""
        with self._cloud.lock:
            return self._issue_token(self.validate_token(token_id).user,
                                     project_name, project_id)

    def _issue_token(self, user: User, project_name: str | None,
                     project_id: str | None) -> Token:
        project = None
        if project_name or project_id:
            project = next((p for p in self.projects.values()
                            if p.id == project_id or
                            (not project_id and p.name == project_name)),
                           None)
            if project is None or project.id != user.project_id:
                raise exc.Unauthorized(
                    f"User {user.id} has no access to project "
                    f"{project_id or project_name}")
        issued = utcnow()
        token = Token(uuid.uuid4().hex, user, project, issued,
                      issued + TOKEN_LIFETIME)
        self.tokens[token.id] = token
        return token

    def validate_token(self, token_id: str | None) -> Token:
        with self._cloud.lock:
            token = self.tokens.get(token_id or "")
            if token is None or token.expires_at <= utcnow():
                raise exc.AuthenticationRequired()
            return token

    def revoke_token(self, token_id: str) -> None:
        with self._cloud.lock:
            if self.tokens.pop(token_id, None) is None:
                raise exc.TokenNotFound(token_id)

    # -- projects and users ---------------------------------------------------

    def get_project(self, caller: Caller, project_id: str) -> Project:
        """A project the caller may see: its own, or any for an admin."""
        with self._cloud.lock:
            project = self.projects.get(project_id)
            if project is None or not (caller.is_admin or
                                       caller.project_id == project_id):
                raise exc.ProjectNotFound(project_id)
            return project

    def get_user(self, caller: Caller, user_id: str) -> User:
        """A user the caller may see: itself, or any for an admin."""
        with self._cloud.lock:
            user = self.users.get(user_id)
            if user is None or not (caller.is_admin or
                                    caller.user_id == user_id):
                raise exc.UserNotFound(user_id)
            return user
