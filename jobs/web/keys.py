"""The API keys page: create a named key (its secret shown once), list, revoke; the webhook signing secret."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from jobs.errors import BatchsiteError, NotFound
from jobs.services import keys as key_service
from jobs.services import quotas, webhook_secrets
from jobs.web.forms import KeyForm


@login_required
def keys_page(request: HttpRequest) -> HttpResponse:
    form = KeyForm(request.POST or None)
    context: dict[str, object] = {}
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                key, secret = key_service.create_key(request.user, form.cleaned_data["name"])
            except BatchsiteError as exc:
                form.add_error("name", exc.message)
                status = 400
            else:
                # Rendered into this response only: the secret is stored nowhere
                # (not even in the session), so it cannot be shown again.
                context.update(new_key=key, secret=secret)
                form = KeyForm()
        else:
            status = 400
    context.update(
        form=form,
        keys=list(key_service.keys_of(request.user)),
        api_base=request.build_absolute_uri("/v1"),
        # Unlike an API key, the webhook secret is shown whenever asked: receivers
        # need it to verify, and it grants no access to the API.
        webhook_secret=webhook_secrets.get_or_create(request.user),
        quota_rows=quotas.usage_rows(request.user),
    )
    response = render(request, "web/keys.html", context, status=status)
    if "secret" in context:
        response["Cache-Control"] = "no-store"
    return response


@require_POST
@login_required
def webhook_secret_rotate(request: HttpRequest) -> HttpResponse:
    secret = webhook_secrets.rotate(request.user)
    messages.success(
        request,
        "A new webhook secret is in use. Events are signed with both the new and the old secret until "
        f"{secret.previous_until:%Y-%m-%d %H:%M} UTC; switch your receivers to the new one before then.",
    )
    return redirect("keys")


@require_POST
@login_required
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    try:
        key = key_service.revoke_key(request.user, key_id)
    except NotFound as exc:
        raise Http404(exc.message) from None
    messages.success(request, f"Key {key.prefix}… is revoked: requests with it are refused from now on.")
    return redirect("keys")
