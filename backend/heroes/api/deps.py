"""FastAPI dependencies of the routes: one ``Annotated`` alias each."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from heroes.db import Session


async def get_session(request: Request) -> Session:
    return Session(request.app.state.db)


SessionDep = Annotated[Session, Depends(get_session)]
