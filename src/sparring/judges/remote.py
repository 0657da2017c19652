"""A judge behind an OpenAI-compatible endpoint (e.g. a vLLM server holding a guard model).

Bounded concurrency, per-request timeouts, retries with exponential backoff on timeouts, 429,
5xx and malformed replies; a batch either scores completely or raises (never half a step). The
API key is read from an environment variable at request time and never stored or logged.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from sparring.errors import SparringError
from sparring.judges.base import Judge


class JudgeUnavailable(SparringError):
    """The remote judge did not give a usable answer after every retry."""


class _Retryable(Exception):
    pass


class RemoteJudge(Judge):
    """POST {url}/chat/completions with the conversation; read P(unsafe) from the verdict token."""

    name = "remote"

    def __init__(
        self,
        url: str,
        model: str,
        key_env: str = "SPARRING_JUDGE_API_KEY",
        concurrency: int = 8,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 1.0,
        safe_token: str = "safe",
        unsafe_token: str = "unsafe",
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise SparringError(f"remote judge URL '{url}' must start with http:// or https://")
        self.endpoint = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.key_env = key_env
        self.concurrency, self.timeout = concurrency, timeout
        self.retries, self.backoff = retries, backoff
        self.safe_token, self.unsafe_token = safe_token, unsafe_token
        self.name = f"remote:{url}"

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        self._check(prompts, responses)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return np.array(list(pool.map(self._score_one, prompts, responses)), dtype=np.float64)

    def _score_one(self, prompt: str, response: str) -> float:
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                "max_tokens": 1,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": 20,
            }
        ).encode()
        problem = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                return self.parse(self._post(body))
            except _Retryable as exc:
                problem = str(exc)
        raise JudgeUnavailable(
            f"remote judge {self.endpoint} failed after {self.retries + 1} attempts: {problem}",
            hint="check the server is up and serving the model; raise timeout/retries for a slow server",
        )

    def _post(self, body: bytes) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                raw = reply.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 429 or exc.code >= 500:
                raise _Retryable(f"HTTP {exc.code}") from exc
            raise SparringError(
                f"remote judge {self.endpoint} refused the request: HTTP {exc.code}",
                hint=f"check the URL, the model name and the API key variable ${self.key_env}"
                if exc.code in (401, 403, 404)
                else None,
            ) from exc
        except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _Retryable("the reply is not JSON") from exc

    def parse(self, reply: dict) -> float:
        """P(unsafe) from top log-probs of the verdict tokens, else from the verdict text."""
        try:
            choice = reply["choices"][0]
        except (KeyError, IndexError, TypeError) as exc:
            raise _Retryable("the reply has no choices") from exc
        probs: dict[str, float] = {}
        content = ((choice.get("logprobs") or {}).get("content") or [{}])[0]
        for item in content.get("top_logprobs") or []:
            token = str(item.get("token", "")).strip().lower()
            if token in (self.safe_token, self.unsafe_token) and token not in probs:
                probs[token] = math.exp(float(item["logprob"]))
        if probs:
            safe, unsafe = probs.get(self.safe_token, 0.0), probs.get(self.unsafe_token, 0.0)
            return unsafe / (safe + unsafe)
        text = str((choice.get("message") or {}).get("content") or choice.get("text") or "").strip().lower()
        if text.startswith(self.unsafe_token):
            return 1.0
        if text.startswith(self.safe_token):
            return 0.0
        raise _Retryable(f"the reply's verdict {text[:30]!r} is neither '{self.safe_token}' nor '{self.unsafe_token}'")
