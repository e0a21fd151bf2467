"""A fake LLM with a small context window, for the tests of prompts that must fit one."""

from __future__ import annotations

from dataclasses import dataclass, field

from ragloom.errors import ContextWindowError
from ragloom.runtime import FakeLLM


@dataclass
class SmallWindowLLM(FakeLLM):
    """A fake whose context window holds rendered prompts of at most ``window`` characters."""

    window: int = 10**9
    too_long: list[int] = field(default_factory=list)

    def _stream(self, prompt, params):
        text = self.render(prompt)
        if len(text) > self.window:
            self.too_long.append(len(text))
            raise ContextWindowError(f"prompt of {len(text)} characters exceeds {self.window}")
        return super()._stream(prompt, params)
