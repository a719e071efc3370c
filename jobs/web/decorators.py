"""Sign-in for the parts of pages that htmx refreshes."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import resolve_url


def login_required_live(page: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """login_required for a fragment of ``page`` (a URL name) that htmx polls.

    A plain redirect would be followed by htmx's request and the sign-in page
    swapped into the middle of the dashboard; HX-Redirect makes the browser
    go to the sign-in page instead, coming back to the page afterwards.
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        protected = login_required(view)

        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.user.is_authenticated or not request.headers.get("HX-Request"):
                return protected(request, *args, **kwargs)
            back = resolve_url(page, *args, **kwargs)
            target = redirect_to_login(back, resolve_url(settings.LOGIN_URL))
            return HttpResponse(status=200, headers={"HX-Redirect": target["Location"]})

        return wrapper

    return decorate
