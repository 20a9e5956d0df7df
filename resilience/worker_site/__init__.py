"""A Django site whose only traffic is workers outside the request cycle (see
:mod:`resilience.workers`): django-tasks' ``db_worker``, a plain loop and a ``DirectCommand``."""
