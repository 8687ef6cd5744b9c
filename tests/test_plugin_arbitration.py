"""Two detectors claim one file: the score decides, ties are said out loud, losers are kept, and
a built-in can be switched off so a plugin replaces it outright."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from modelsafe.plugins.hookspecs import hookimpl
from modelsafe.registry.identify import TIE_MARGIN, identify
from modelsafe.registry.read import read_index
from modelsafe.testing import fresh_plugin_manager, write_safetensors
from modelsafe.testing.layouts import base_models
from modelsafe.types import Candidate, Identity, TensorIndex


def claimer(score: float, family: str = "sd1", variant: str = "house-merge") -> SimpleNamespace:
    """A detector plugin that claims every file that has a UNet, with ``score``."""

    @hookimpl
    def modelsafe_identify(index: TensorIndex) -> Candidate | None:
        if not any("diffusion_model" in t.name for t in index.tensors):
            return None
        return Candidate(family, "checkpoint", score, ("house rule: our merges",), variant)

    return SimpleNamespace(__name__="house", modelsafe_identify=modelsafe_identify)


@pytest.fixture(scope="module")
def sd1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arb") / "sd15.safetensors"
    return write_safetensors(path, base_models.unet_checkpoint("sd1"), data="sparse")


def identify_file(path: Path) -> Identity:
    return identify(read_index(path))


def builtin_score(path: Path) -> float:
    with fresh_plugin_manager():
        identity = identify_file(path)
    assert (identity.family, identity.kind) == ("sd1", "checkpoint")
    return identity.confidence


def test_a_higher_score_outranks_the_builtin(sd1: Path) -> None:
    with fresh_plugin_manager(claimer(0.99)):
        identity = identify_file(sd1)
    assert (identity.variant, identity.detector) == ("house-merge", "house")
    assert "house rule: our merges" in identity.evidence
    loser = identity.candidates[0]
    assert loser.family == "sd1" and loser.variant != "house-merge" and loser.score < 0.99
    assert loser.detector != "house" and loser.evidence  # the built-in keeps its evidence


def test_a_lower_score_loses_but_is_listed(sd1: Path) -> None:
    with fresh_plugin_manager(claimer(0.4, family="sd2")):
        identity = identify_file(sd1)
    assert identity.family == "sd1" and identity.detector != "house"
    assert any(c.family == "sd2" and c.detector == "house" for c in identity.candidates)


def test_equal_scores_are_reported_as_ambiguous(sd1: Path) -> None:
    score = builtin_score(sd1)
    with fresh_plugin_manager(claimer(score - TIE_MARGIN / 2, family="sd2")):
        identity = identify_file(sd1)
    assert any(line.startswith("ambiguous: equally strong answers") for line in identity.evidence)
    assert identity.confidence == pytest.approx(round(score * 0.5, 3))


def test_disabling_the_builtin_lets_the_plugin_replace_it(sd1: Path) -> None:
    with fresh_plugin_manager(claimer(0.5), disable=("family_unet",)) as pm:
        identity = identify_file(sd1)
        assert pm.records["family_unet"].status == "disabled"
    assert (identity.variant, identity.detector) == ("house-merge", "house")
    assert all(c.detector != "family_unet" for c in identity.candidates)
