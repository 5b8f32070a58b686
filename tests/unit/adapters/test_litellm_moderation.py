"""gateway.adapters.litellm_moderation: flagged categories under OpenAI's names."""

from __future__ import annotations

from gateway.adapters.litellm_moderation import flagged_categories


def test_flagged_categories_use_api_names_once() -> None:
    categories = {
        "harassment": False,
        "self_harm_intent": True,
        "self-harm/intent": True,
        "violence": True,
        "illicit_violent": True,  # only the SDK spelling present: kept as it is
        "sexual": None,
    }
    assert flagged_categories(categories) == ["self-harm/intent", "violence", "illicit_violent"]
    assert flagged_categories(None) == []
