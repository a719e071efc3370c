"""The pages' routes (included at the site's root by batchsite/urls.py)."""

from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from jobs.web import batches, dashboard, keys, submit

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboard", permanent=False), name="home"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="web/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("submit", submit.submit, name="submit"),
    path("dashboard", dashboard.dashboard, name="dashboard"),
    path("dashboard/live", dashboard.dashboard_live, name="dashboard-live"),
    path("batches", batches.batch_list, name="batch-list"),
    path("batches/<str:batch_id>", batches.batch_detail, name="batch"),
    path("batches/<str:batch_id>/live", batches.batch_live, name="batch-live"),
    path("batches/<str:batch_id>/cancel", batches.batch_cancel, name="batch-cancel"),
    path("batches/<str:batch_id>/retry", batches.batch_retry, name="batch-retry"),
    path("batches/<str:batch_id>/files/<str:kind>", batches.batch_download, name="batch-file"),
    path("batches/<str:batch_id>/results/<str:kind>", batches.batch_results, name="batch-results"),
    path("keys", keys.keys_page, name="keys"),
    path("keys/<int:key_id>/revoke", keys.key_revoke, name="key-revoke"),
    path("keys/webhook-secret/rotate", keys.webhook_secret_rotate, name="webhook-secret-rotate"),
    # The seed's pages, kept working.
    path("submit_batch.html", RedirectView.as_view(pattern_name="submit", permanent=True)),
    path("dashboard.html", RedirectView.as_view(pattern_name="dashboard", permanent=True)),
]
