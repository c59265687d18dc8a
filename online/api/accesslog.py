"""Access logs without raw ids: request paths are logged as their route templates.

A path such as ``/v1/users/17850/profile`` carries a user id (raw: the client's), and so
would every access log line of it, including the DELETE that erases the user.
`RouteTemplateFilter` rewrites uvicorn's access records to the matching route's template
(``/v1/users/{user_id}/profile``), drops the query string, and logs paths that match no
route as ``<unmatched>``. `create_app` installs it on the ``uvicorn.access`` logger while
the app runs, however uvicorn was started; the templates are the app's OpenAPI paths (plus
the documentation routes).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

__all__ = ["ACCESS_LOGGER", "RouteTemplateFilter"]

ACCESS_LOGGER = "uvicorn.access"
UNMATCHED = "<unmatched>"
_PATH_ARG = 2  # uvicorn: '%s - "%s %s HTTP/%s" %d' % (client, method, path?query, ...)


_PARAM = re.compile(r"\{(\w+)(:path)?\}")


def template_regex(template: str) -> re.Pattern[str]:
    """The paths a route template matches (``{name}``: one segment, ``{name:path}``: any).

    >>> bool(template_regex("/v1/users/{user_id}/profile").match("/v1/users/a%20b/profile"))
    True
    """
    out, at = ["^"], 0
    for m in _PARAM.finditer(template):
        out += [re.escape(template[at:m.start()]), ".+" if m.group(2) else "[^/]+"]
        at = m.end()
    out += [re.escape(template[at:]), "$"]
    return re.compile("".join(out))


class RouteTemplateFilter(logging.Filter):
    """Replace the path of each access record by its route template (never drops a record)."""

    def __init__(self, templates: Iterable[str]) -> None:
        super().__init__()
        # literal templates first: /v1/profiles:batch before a {param} that could match it
        ordered = sorted(templates, key=lambda t: ("{" in t, t))
        self._routes = [(template_regex(t), t) for t in ordered]

    def template(self, path: str) -> str:
        """The template of the first route matching ``path`` (query string ignored)."""
        path = path.split("?", 1)[0]
        for regex, template in self._routes:
            if regex.match(path):
                return template
        return UNMATCHED

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        path = args[_PATH_ARG] if isinstance(args, tuple) and len(args) > _PATH_ARG else None
        if isinstance(args, tuple) and isinstance(path, str):
            record.args = (*args[:_PATH_ARG], self.template(path), *args[_PATH_ARG + 1:])
        return True
