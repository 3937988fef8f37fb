"""Flask apps of the tests' own that use jwtapi as a library (served by gunicorn, too:
``gunicorn --pythonpath tests 'apps.own_users:create_app()'``)."""
