"""The server token never shows in the settings' text form."""

from __future__ import annotations

from conveyor_asgi import Settings, create_app


def test_settings_repr_hides_the_server_token() -> None:
    settings = Settings.from_env({"CONVEYOR_SERVER_TOKEN": "hunter2-very-secret"})
    assert settings.server_token == "hunter2-very-secret"
    assert "hunter2-very-secret" not in repr(settings)
    assert "hunter2-very-secret" not in str(settings)
    assert "use_presence=False" in repr(settings)


def test_the_app_object_does_not_expose_the_token_in_its_repr() -> None:
    app = create_app(Settings(server_token="hunter2-very-secret"))
    assert "hunter2-very-secret" not in repr(app.settings)
