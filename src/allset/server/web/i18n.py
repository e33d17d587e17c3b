"""The web interface's words, in French (the default: the contract and the first
customers are French) and English.

One table, message id -> (French, English), so a missing translation is visible in review
and a test can check that both columns are filled. The language comes from the user's
choice (a cookie), else the browser's ``Accept-Language``, else French.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

LANGS = ("fr", "en")
LANG_COOKIE = "allset-lang"

MESSAGES: dict[str, tuple[str, str]] = {
    "app.tagline": ("Vos fichiers, en sécurité", "Your files, safe"),
    "nav.files": ("Fichiers", "Files"),
    "nav.account": ("Compte", "Account"),
    "nav.operator": ("Console opérateur", "Operator console"),
    "nav.signout": ("Se déconnecter", "Sign out"),
    "nav.language": ("Langue", "Language"),
    "nav.skip": ("Aller au contenu", "Skip to content"),
    "login.title": ("Connexion", "Sign in"),
    "login.email": ("Adresse e-mail", "Email address"),
    "login.password": ("Mot de passe", "Password"),
    "login.submit": ("Se connecter", "Sign in"),
    "login.wrong": ("Adresse ou mot de passe incorrect.", "Wrong email or password."),
    "login.throttled": (
        "Trop de tentatives. Réessayez dans {seconds} secondes.",
        "Too many attempts. Try again in {seconds} seconds.",
    ),
    "login.suspended": (
        "Le service de votre organisation est suspendu : {reason}",
        "Your organisation's service is suspended: {reason}",
    ),
    "login.expired": (
        "Votre session a expiré ; reconnectez-vous.",
        "Your session has ended; please sign in again.",
    ),
    "login.signedout": ("Vous êtes déconnecté.", "You are signed out."),
    "files.title": ("Fichiers", "Files"),
    "files.root": ("Mes fichiers", "My files"),
    "files.name": ("Nom", "Name"),
    "files.size": ("Taille", "Size"),
    "files.modified": ("Modifié", "Modified"),
    "files.empty": ("Ce dossier est vide.", "This folder is empty."),
    "files.folder": ("Dossier", "Folder"),
    "files.download": ("Télécharger", "Download"),
    "files.next": ("Page suivante", "Next page"),
    "files.first": ("Première page", "First page"),
    "files.count": ("{n} éléments sur cette page", "{n} items on this page"),
    "files.notfound": ("Ce dossier n'existe pas.", "This folder does not exist."),
    "quota.used": ("{used} utilisés sur {quota}", "{used} used of {quota}"),
    "operator.title": ("Console opérateur", "Operator console"),
    "operator.clients": ("Clients", "Clients"),
    "operator.status": ("État", "Status"),
    "operator.used": ("Espace utilisé", "Space used"),
    "error.title": ("Une erreur est survenue", "Something went wrong"),
    "error.csrf": (
        "Le formulaire a expiré. Rechargez la page et réessayez.",
        "The form has expired. Reload the page and try again.",
    ),
    "error.back": ("Retour", "Back"),
}


def register(messages: dict[str, tuple[str, str]]) -> None:
    """Each area of the interface adds its own words (one table per module keeps areas
    apart); an id used twice is a bug, caught at import."""
    clash = set(messages) & set(MESSAGES)
    if clash:
        raise ValueError(f"message ids defined twice: {sorted(clash)}")
    MESSAGES.update(messages)


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The user's choice, else the first of our languages the browser asks for, else
    French. ``Accept-Language`` q-values are honoured (``en;q=0.9, fr;q=0.8`` -> en)."""
    if cookie in LANGS:
        return cookie
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGS and q > 0:
            ranked.append((-q, i, primary))
    return sorted(ranked)[0][2] if ranked else "fr"


def translator(lang: str) -> Callable[..., str]:
    column = LANGS.index(lang) if lang in LANGS else 0

    def t(message_id: str, **values: Any) -> str:
        text = MESSAGES[message_id][column]
        return text.format(**values) if values else text

    return t
