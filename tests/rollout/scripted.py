"""A stand-in for the sampler whose completions a test scripts: each prompt row (found by
decoding it) gets the completions the script lists for its question, in order."""

import numpy as np

from r1jax.rollout import engine


def install(monkeypatch, tok, script: dict) -> list:
    """Replace `r1jax.rollout.engine.sample`; returns the list of recorded calls (rows, rng, scfg).
    `script` maps a question (the text after "User: ") to its G completions (a dict, or a
    function of the question)."""
    calls = []

    def fake_sample(cfg, scfg, params, prompt_tokens, prompt_mask, rng):
        prompt_tokens, prompt_mask = np.asarray(prompt_tokens), np.asarray(prompt_mask)
        calls.append({"rows": prompt_tokens.shape[0], "rng": rng, "scfg": scfg})
        g, n = scfg.num_samples, scfg.max_new_tokens
        assert tok.eos_id in scfg.stop_ids
        tokens = np.zeros((prompt_tokens.shape[0] * g, n), np.int32)
        lengths = np.zeros(len(tokens), np.int32)
        for b, (row, mask) in enumerate(zip(prompt_tokens, prompt_mask)):
            text = tok.decode(row[mask])
            question = text[text.index("User: ") + len("User: "):text.index("\nAssistant:")]
            completions = script(question) if callable(script) else script[question]
            assert len(completions) == g, (question, len(completions), g)
            for j, completion in enumerate(completions):
                ids = [*tok.encode(completion), tok.eos_id][:n]
                tokens[b * g + j, :len(ids)] = ids
                lengths[b * g + j] = len(ids)
        mask = np.arange(n) < lengths[:, None]
        return {"tokens": tokens, "logprobs": np.full(tokens.shape, -1.0, np.float32) * mask,
                "mask": mask, "lengths": lengths}

    monkeypatch.setattr(engine, "sample", fake_sample)
    return calls
