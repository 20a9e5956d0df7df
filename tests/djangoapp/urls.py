from __future__ import annotations

from django.urls import path

from tests.djangoapp import views

urlpatterns = [
    path("items/", views.items),
    path("items-async/", views.items_async),
]
