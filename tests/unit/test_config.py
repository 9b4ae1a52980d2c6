import dataclasses

import pytest

from vlarl.cli import build_parser, main
from vlarl.config import COMMANDS, ConfigError, describe, load_config, save_config
from vlarl.config.loader import available_presets


def test_defaults_and_overrides():
    cfg = load_config("demos", overrides=["env.num_envs=3", "env.tasks=[reach-v3,push-v3]", "run.seed=7"])
    assert cfg.env.num_envs == 3
    assert cfg.env.tasks == ["reach-v3", "push-v3"]
    assert cfg.run.seed == 7
    assert cfg.demos.episodes_per_task == 20  # untouched default


def test_layers_apply_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("env:\n  num_envs: 5\n  image_size: 96\n")
    cfg = load_config("demos", preset="metaworld_mt1_tiny", config_file=str(f), overrides=["env.num_envs=2"])
    assert cfg.env.task_set == "MT1"  # from the preset
    assert cfg.env.image_size == 96  # file beats preset
    assert cfg.env.num_envs == 2  # override beats file


def test_round_trip(tmp_path):
    cfg = load_config("demos", preset="metaworld_mt10_tiny", overrides=["demos.action_noise=0.1"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config("demos", config_file=str(tmp_path / "config.yaml"))
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)


def test_unknown_key_names_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config("demos", overrides=["env.num_env=3"])
    msg = str(e.value)
    assert "'num_env'" in msg and "did you mean 'num_envs'" in msg
    assert "image_size" in msg and "max_episode_steps" in msg  # lists the valid keys


def test_unknown_section_and_preset():
    with pytest.raises(ConfigError, match="valid keys: demos, env, run"):
        load_config("demos", overrides=["bogus.x=1"])
    with pytest.raises(ConfigError, match="available presets: .*metaworld_mt10_tiny"):
        load_config("demos", preset="nope")


def test_unknown_key_in_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("env:\n  num_workerz: 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml: section env"):
        load_config("demos", config_file=str(f))


def test_bad_type_names_key_path():
    with pytest.raises(ConfigError, match=r"env\.num_envs"):
        load_config("demos", overrides=["env.num_envs=many"])
    with pytest.raises(ConfigError, match=r"env\.shadows"):
        load_config("demos", overrides=["env.shadows=perhaps"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("demos", overrides=["env.num_envs"])


@pytest.mark.parametrize("preset", available_presets())
def test_every_preset_loads(preset):
    cfg = load_config("demos", preset=preset)
    assert cfg.env.num_envs >= 1


def test_every_field_has_help():
    for command, cls in COMMANDS.items():
        rows = describe(cls)
        assert rows, command
        for key, _, _, text in rows:
            assert text.strip(), f"{command}: {key} has no help"


def test_cli_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demos", "--help"])
    out = capsys.readouterr().out
    for key, *_ in describe(COMMANDS["demos"]):
        assert key in out


def test_cli_reports_config_errors(capsys):
    assert main(["demos", "env.num_envz=1"]) == 2
    assert "num_envs" in capsys.readouterr().out


def test_cli_print_config(capsys):
    assert main(["demos", "--preset", "metaworld_mt1_tiny", "--print-config", "env.image_size=80"]) == 0
    out = capsys.readouterr().out
    assert "image_size: 80" in out and "task_set: MT1" in out


def test_sft_cache_key_ignores_rl_only_options_and_keeps_what_sft_reads():
    from vlarl.sft import sft_cache_dir

    def key(*overrides):
        return sft_cache_dir(load_config("train", "metaworld_mt3_pi0_tiny", overrides=list(overrides)))

    base = key()
    rl_side = ["policy.pi0.noise_level=0.1", "policy.pi0.joint_logprob=false", "policy.top_k=5", "env.reward=shaped"]
    rl_side += ["env.num_eval_init_states=100", "env.eval_seed=7"]
    assert {key(o) for o in rl_side} == {base}
    assert key(*rl_side, "run.name=other", "run.output_dir=/elsewhere") == base
    for sft_side in ["policy.pi0.chunk_len=2", "policy.pi0.noise_method=flow_noise", "sft.steps=10", "run.seed=1"]:
        assert key(sft_side) != base, sft_side


def test_demos_cache_path_ignores_the_evaluation_states_and_keeps_what_the_expert_sees():
    from vlarl.demos import dataset_path

    def path(*overrides):
        return dataset_path(load_config("demos", "metaworld_mt3_pi0_tiny", overrides=list(overrides)))

    base = path()
    assert path("env.num_eval_init_states=100", "env.eval_seed=7", "run.name=other") == base
    for expert_side in ["env.image_size=32", "env.action_repeat=2", "demos.episodes_per_task=3", "run.seed=1"]:
        assert path(expert_side) != base, expert_side
