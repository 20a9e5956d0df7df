"""Django's own test suite, run through neon_django on the stand-in (``nox -s django_suite``)."""
