from __future__ import annotations

from django.urls import path

from tests.replicas import views

urlpatterns = [
    path("read/", views.read),
    path("write-then-read/", views.write_then_read),
    path("aread/", views.aread),
    path("awrite-then-read/", views.awrite_then_read),
]
