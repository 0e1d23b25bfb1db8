-- CRM source schema, shaped like the Salesforce objects pssync reads (Account, Opportunity).
-- Custom fields keep Salesforce's __c suffix so mappings read like the real org.
CREATE SCHEMA IF NOT EXISTS sales;

CREATE TABLE IF NOT EXISTS sales.account (
    id                   varchar(18) PRIMARY KEY,
    name                 text        NOT NULL,
    type                 text,
    industry             text,
    billing_country      char(2),
    currency_iso_code    char(3)     NOT NULL DEFAULT 'USD',
    tax_id__c            text,
    erp_customer_id__c   text,
    created_date         timestamptz NOT NULL DEFAULT now(),
    last_modified_date   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sales.opportunity (
    id                       varchar(18) PRIMARY KEY,
    account_id               varchar(18) REFERENCES sales.account (id),
    name                     text        NOT NULL,
    stage_name               text        NOT NULL,
    amount                   numeric(18, 2),
    currency_iso_code        char(3)     NOT NULL DEFAULT 'USD',
    close_date               date,
    probability              numeric(5, 2),
    is_closed                boolean     NOT NULL DEFAULT false,
    is_won                   boolean     NOT NULL DEFAULT false,
    billing_type__c          text,
    delivery_region__c       text,
    project_manager_email__c text,
    sow_reference__c         text,
    service_lines__c         text,
    created_date             timestamptz NOT NULL DEFAULT now(),
    last_modified_date       timestamptz NOT NULL DEFAULT now()
);
