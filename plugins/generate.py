"""The ``generate`` job: a language model continues a prompt; the text is in the job's result (no new variant)."""

from __future__ import annotations

from workbench.plugin import InputError, Job, JobContext, Param, generate_text


class GenerateJob(Job):
    name = "generate"
    title = "Generate text"
    description = ("Continue a prompt with the language-model variant: greedy, or sampled when temperature > 0, "
                   "with a KV cache. The text is the job's result; no variant is made.")
    produces_variant = False
    needs_torch_model = True

    prompt: str = Param("", help="the text to continue (empty: start from the end-of-text token)")
    max_new_tokens: int = Param(64, min=1, max=8192, help="tokens to generate at most (stops early at end of text)")
    temperature: float = Param(0.0, min=0.0, max=10.0, help="0: greedy, the most likely token each time; "
                                                            "above 0: sample, flatter as it grows")
    top_k: int = Param(0, min=0, max=1_000_000, help="sampling: only from the k most likely tokens (0 = all)",
                       advanced=True)

    def run(self, ctx: JobContext) -> None:
        model = ctx.model
        if not getattr(model, "is_causal_lm", False):
            raise InputError(f"generate needs a language model (zoo:tiny_llama or a Hugging Face folder); "
                             f"variant {ctx.variant_id} is a {type(model).__name__}")
        tokenizer = getattr(model, "tokenizer", None) or getattr(ctx.data, "tokenizer", None)
        done = 0

        def on_token(_token: int) -> None:
            nonlocal done
            done += 1
            ctx.check_cancelled()
            ctx.progress(done, self.max_new_tokens, text="generating")

        ctx.progress(0, self.max_new_tokens, text="prefill")
        gen = generate_text(model, self.prompt, self.max_new_tokens, temperature=self.temperature, top_k=self.top_k,
                            seed=ctx.seed, tokenizer=tokenizer, on_token=on_token)
        ctx.progress(self.max_new_tokens, self.max_new_tokens, text="done")
        ctx.result.update(prompt=self.prompt, text=gen.text, prompt_tokens=gen.prompt_tokens,
                          new_tokens=gen.new_tokens, tokens_per_s=round(gen.tokens_per_s, 2),
                          stopped_at_eos=gen.stopped_at_eos)
        ctx.info(f"generated {gen.new_tokens} tokens ({gen.tokens_per_s:.0f} tokens/s): {gen.text[:200]!r}")
        return None
