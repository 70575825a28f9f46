"""Small applications the tests serve with uvicorn (``tests.apps.NAME:app``)."""
