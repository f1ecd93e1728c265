"""The papers' reference genotypes (search_spaces/reference/), resolving a genotype spec,
retargeting to small sizes, and the files shipped with the package."""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from pathlib import Path

import pytest
import torch

from nas_reid.errors import UserError
from nas_reid.space.genotype import Genotype, GenotypeError
from nas_reid.search import default_space_path
from nas_reid.space import build_model, load_space
from nas_reid.space.backbone import POSITIONS
from nas_reid.space.reference import (
    REFERENCE_DIR,
    REFERENCES,
    make_reference,
    reference_names,
    reference_path,
    resolve_genotype,
    retarget,
    shipped_file,
)

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["baseline", "rga_s", "rga_c", "rga_sc", "rib_dcs", "rib_ca"]
# tests/test_ops.py: the official RGA modules (microsoft/Relation-Aware-Global-Attention-Networks)
# at ResNet-50 256x128, ratios 8/8/8
RGA_EXTRA = {"rga_s": 3_223_800, "rga_c": 3_090_296, "rga_sc": 6_314_096}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _without_version(genotype: Genotype) -> dict:
    data = genotype.to_dict()
    data["provenance"].pop("package_version")
    return data


def test_reference_names_and_files():
    assert reference_names() == NAMES
    assert list(REFERENCES) == NAMES
    folder = reference_path("baseline").parent
    assert folder.name == REFERENCE_DIR
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_reference_resolves_validates_and_round_trips(name):
    path = reference_path(name)
    text = path.read_text(encoding="utf-8")
    genotype, ref = resolve_genotype(name)
    assert ref == name
    assert genotype.to_json() == text
    assert Genotype.from_json(text).to_json() == text
    assert Genotype.from_json(path).to_json() == text
    assert genotype.space.name is None and genotype.space.hash is None
    assert genotype.probabilities == {}
    prov = genotype.provenance
    assert (prov.seed, prov.epoch, prov.search_run) == (None, None, None)
    assert isinstance(prov.package_version, str) and prov.package_version
    # the file is what make_reference writes (up to the package version it was written by)
    assert _without_version(genotype) == _without_version(make_reference(name))
    # the papers' setting: ResNet-50, last stride 1, 256x128; one 1-node cell per stage
    assert (genotype.backbone.name, genotype.backbone.last_stride) == ("resnet50", 1)
    assert genotype.input_size == (256, 128)
    if name == "baseline":
        assert genotype.cells == []
    else:
        assert [c.position for c in genotype.cells] == list(POSITIONS)
        for cell in genotype.cells:
            assert cell.nodes == 1
            assert [(e.source, e.target, e.op) for e in cell.edges] == [(0, 1, REFERENCES[name].op)]


def test_reference_op_parameters():
    for name in ("rga_s", "rga_c", "rga_sc"):
        params = resolve_genotype(name)[0].cells[0].edges[0].params
        assert (params["c_ratio"], params["s_ratio"], params["d_ratio"]) == (8, 8, 8)
    dcs = resolve_genotype("rib_dcs")[0].cells[0].edges[0].params
    assert dcs["variant"] == "mask"
    assert resolve_genotype("rib_ca")[0].cells[0].edges[0].params == {"reduction": 16}


def test_reference_metadata():
    for name, ref in REFERENCES.items():
        assert ref.name == name
        assert ref.description and "\n" not in ref.description
        assert ref.paper
        expected = {"loss": {"rib": 0.1, "rib_warmup": 0.3}} if name.startswith("rib_") else {}
        assert ref.recipe_overrides == expected
    overrides = REFERENCES["rib_dcs"].recipe_overrides
    overrides["loss"]["rib"] = 5.0  # a copy: the metadata does not change
    assert REFERENCES["rib_dcs"].recipe_overrides["loss"]["rib"] == 0.1
    assert REFERENCES["rib_ca"].recipe_overrides["loss"]["rib"] == 0.1


def test_rga_parameter_counts_match_the_official_models():
    torch.manual_seed(0)
    base = build_model(resolve_genotype("baseline")[0], 751).num_parameters()
    for name, extra in RGA_EXTRA.items():
        model = build_model(resolve_genotype(name)[0], 751)
        assert model.num_parameters() - base == extra, name


def test_resolve_by_path_and_run_folder(tmp_path):
    genotype, ref = resolve_genotype(reference_path("rga_s"))
    assert ref == "rga_s" and genotype.op_counts() == {"rga_s": 4}
    genotype, ref = resolve_genotype(str(reference_path("rib_ca")))
    assert ref == "rib_ca"
    copy = tmp_path / "mine.json"
    shutil.copyfile(reference_path("rga_c"), copy)
    genotype, ref = resolve_genotype(copy)
    assert ref is None and genotype.op_counts() == {"rga_c": 4}
    run = tmp_path / "runs" / "search1"
    run.mkdir(parents=True)
    shutil.copyfile(reference_path("rib_dcs"), run / "genotype.json")
    genotype, ref = resolve_genotype(run)
    assert ref is None and genotype.op_counts() == {"dcs": 4}
    assert resolve_genotype(str(run))[0] == genotype
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GenotypeError, match="without genotype.json"):
        resolve_genotype(empty)


def test_resolve_prefers_an_existing_path_to_a_reference_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rga_s").mkdir()  # a run folder that happens to share a reference name
    shutil.copyfile(reference_path("rib_ca"), tmp_path / "rga_s" / "genotype.json")
    genotype, ref = resolve_genotype("rga_s")
    assert ref is None and genotype.op_counts() == {"se": 4}
    (tmp_path / "baseline").mkdir()  # a folder without genotype.json: the name wins
    assert resolve_genotype("baseline")[1] == "baseline"


@pytest.mark.parametrize("spec", ["rga", "no/such/file.json", "", "RGA_SC"])
def test_bad_spec_lists_the_reference_names(spec):
    with pytest.raises(GenotypeError) as info:
        resolve_genotype(spec)
    assert isinstance(info.value, UserError)
    for name in NAMES:
        assert name in str(info.value)
    with pytest.raises(GenotypeError, match="rga_sc"):
        reference_path("nope")


def test_bad_genotype_file_reports_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something else"}', encoding="utf-8")
    with pytest.raises(GenotypeError, match="bad.json"):
        resolve_genotype(bad)


@pytest.mark.parametrize("name", NAMES)
def test_retarget_to_resnet18_64x32_builds_and_runs(name):
    original = resolve_genotype(name)[0]
    small = retarget(original, backbone="resnet18", input_size=(64, 32))
    assert (small.backbone.name, small.backbone.last_stride, small.input_size) == ("resnet18", 1, (64, 32))
    assert [c.model_dump() for c in small.cells] == [c.model_dump() for c in original.cells]
    assert small.space.name is None and small.space.hash is None and small.probabilities == {}
    assert small.provenance == original.provenance
    assert Genotype.from_json(small.to_json()) == small
    torch.manual_seed(0)
    model = build_model(small, 10)
    x = torch.randn(2, 3, 64, 32)
    out = model(x)
    assert out["logits"].shape == (2, 10) and out["feat"].shape == (2, 512)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert out["feat_bn"].shape == (2, 512) and torch.isfinite(out["feat_bn"]).all()


def test_retarget_rebuilds_rga_at_the_new_size_and_selects_positions():
    rga = resolve_genotype("rga_s")[0]
    only = retarget(rga, input_size=(128, 64), positions=["layer3", "layer4"])
    assert [c.position for c in only.cells] == ["layer3", "layer4"]
    assert only.position_shapes() == {"layer3": (1024, 8, 4), "layer4": (2048, 8, 4)}
    assert retarget(rga, positions=[]).cells == []
    assert retarget(rga, last_stride=2).position_shapes()["layer4"] == (2048, 8, 4)
    with torch.device("meta"):  # RGA's relation conv has 2N input channels: rebuilt for N = 32
        model = build_model(only, 10)
    assert model.cells["layer3"].ops["e0_1"].relation[0].weight.shape[1] == 2 * 8 * 4
    with pytest.raises(GenotypeError, match="no cell at 'layer1'"):
        retarget(only, positions=["layer1"])
    with pytest.raises(GenotypeError, match="unknown position"):
        retarget(rga, positions=["layer5"])
    with pytest.raises(GenotypeError, match="backbone"):
        retarget(rga, backbone="vgg16")


def test_retarget_drops_the_space_reference_of_a_searched_genotype():
    data = make_reference("rib_ca").to_dict()
    data["space"] = {"name": "cpu_small", "hash": "0123456789abcdef"}
    data["provenance"].update(seed=3, epoch=11, search_run="runs/x")
    data["probabilities"] = {"layer1": {"ops": ["identity", "se"], "edges": [[0, 1]],
                                        "values": [[0.25, 0.75]]}}
    searched = Genotype.from_dict(data)
    small = retarget(searched, backbone="resnet18", input_size=(64, 32), positions=["layer1"])
    assert small.space.name is None and small.space.hash is None
    assert small.probabilities == {}
    assert (small.provenance.seed, small.provenance.epoch, small.provenance.search_run) == (
        3, 11, "runs/x")


def test_default_space_path_and_shipped_files():
    path = default_space_path()
    assert path.is_file() and path.name == "cpu_small.yaml"
    assert load_space(path).name == "cpu_small"
    assert shipped_file("rga_dcs_ca.yaml").is_file()
    assert shipped_file("reference", "rga_sc.json") == reference_path("rga_sc")
    with pytest.raises(UserError, match="missing"):
        shipped_file("no_such_space.yaml")


def test_pyproject_ships_every_subpackage_and_data_file():
    """The package list in pyproject.toml is explicit (search_spaces/ is mapped into the
    package): every subpackage of nas_reid and every shipped data file must be covered."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "nas_reid").rglob("__init__.py")}
    assert found - listed == set(), "add these packages to [tool.setuptools] packages"
    assert config["package-dir"]["nas_reid.search_spaces"] == "search_spaces"
    assert "nas_reid.search_spaces" in listed
    patterns = config["package-data"]["nas_reid.search_spaces"]
    data_dir = ROOT / "search_spaces"
    files = [p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*")
             if p.is_file() and p.suffix in (".yaml", ".yml", ".json")]
    assert files
    missed = [f for f in files if not any(
        fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)]
    assert missed == [], "add package-data patterns for these files"


# ------------------------------------------------------------------------------ space hashes


def _search_run(folder: Path, *, hash_of=None, op=("se", {"reduction": 8}), name="tiny") -> Path:
    """A search run folder as far as a genotype spec needs: config.yaml with the tiny space,
    genotype.json recording ``hash_of``'s hash (default the space's own) with ``op`` on layer4."""
    import yaml

    from tests.tiny import tiny_genotype, tiny_space

    folder.mkdir(parents=True)
    space = load_space(tiny_space())
    (folder / "config.yaml").write_text(yaml.safe_dump({"space": space.resolved()}))
    data = tiny_genotype(ops=(("layer4", *op),)).to_dict()
    data["space"] = {"name": name, "hash": (hash_of or space).canonical_hash()}
    Genotype.from_dict(data).save(folder / "genotype.json")
    return folder


def test_space_misfit_names_what_no_network_of_the_space_has():
    from tests.tiny import tiny_genotype, tiny_space

    space = load_space(tiny_space())
    assert tiny_genotype().space_misfit(space) is None
    assert "input 64x32, the space's is 128x64" in tiny_genotype().space_misfit(
        load_space({**tiny_space(), "input": {"height": 128, "width": 64}}))
    assert "backbone resnet_tiny" in tiny_genotype().space_misfit(
        load_space({**tiny_space(), "backbone": {"name": "resnet50", "last_stride": 1}}))
    assert "op se {'reduction': 4} on layer4 edge 0->1 is not a candidate" in tiny_genotype(
        ops=(("layer4", "se", {"reduction": 4}),)).space_misfit(space)
    assert "a cell at layer2" in tiny_genotype(ops=(("layer2", "eca", {}),)).space_misfit(space)


def test_a_genotype_whose_hash_matches_its_run_space_is_taken_quietly(tmp_path, recwarn):
    run = _search_run(tmp_path / "run")
    genotype, _ = resolve_genotype(run)
    assert genotype.cells[0].edges[0].op == "se" and not recwarn.list


def test_a_space_hash_that_differs_but_fits_the_space_is_a_warning(tmp_path):
    from nas_reid.space.reference import SpaceMismatchWarning
    from tests.tiny import tiny_space

    other = load_space({**tiny_space(), "ops": ["identity", {"name": "se", "params": {"reduction": 8}}]})
    run = _search_run(tmp_path / "run", hash_of=other)
    for spec in (run, run / "genotype.json"):
        with pytest.warns(SpaceMismatchWarning, match=f"is not that of the search space of its run "
                          f"{run}.*network is one of that space's"):
            resolve_genotype(spec)


def test_a_space_hash_that_differs_with_another_network_is_refused_where_it_is_built(tmp_path, run):
    from nas_reid.space.reference import SpaceMismatchWarning
    from tests.tiny import tiny_space

    other = load_space({**tiny_space(), "ops": ["identity", {"name": "se", "params": {"reduction": 4}}]})
    folder = _search_run(tmp_path / "run", hash_of=other, op=("se", {"reduction": 4}))
    with pytest.raises(GenotypeError, match="none of that space's: op se .* is not a candidate"):
        resolve_genotype(folder)
    result = run("retrain", "--genotype", folder, "--out", tmp_path / "retrain")
    assert result.exit_code == 2 and not (tmp_path / "retrain").exists()
    assert result.output.count("\n") == 1 and "is not a candidate of the space" in result.output
    with pytest.warns(SpaceMismatchWarning, match="none of that space's"):  # looking is harmless
        shown = run("genotype", "show", folder)
    assert shown.exit_code == 0, shown.output


def test_a_shipped_space_name_with_another_hash_is_a_warning(tmp_path):
    from nas_reid.space.reference import SpaceMismatchWarning
    from tests.tiny import tiny_genotype

    data = tiny_genotype(backbone="resnet18").to_dict()  # cpu_small's backbone
    data["space"] = {"name": "cpu_small", "hash": "0123456789abcdef"}
    data["input"] = {"height": 128, "width": 64}  # cpu_small's input: a network of that space
    Genotype.from_dict(data).save(tmp_path / "g.json")
    with pytest.warns(SpaceMismatchWarning, match="shipped search space 'cpu_small'"):
        resolve_genotype(tmp_path / "g.json")
    data["space"]["hash"] = load_space(default_space_path()).canonical_hash()
    Genotype.from_dict(data).save(tmp_path / "g.json")
    resolve_genotype(tmp_path / "g.json")  # the hash of the shipped space: nothing said
