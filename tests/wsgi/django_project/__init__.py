"""A minimal Django project for the WSGI tests: settings, URLs and views, no database."""
